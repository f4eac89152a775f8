"""What the link guard looks for: which attribute of which part of an office file links outside.

ODF parts link with xlink:href (clicked links stay); OOXML packages with external
relationships (web and mail hyperlinks stay); WordprocessingML with INCLUDE* fields. Each rule
takes an element and its attributes (namespace-resolved) and returns the attribute names to
empty. `Unsafe` is what every part of the guard raises for a file it refuses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

XLINK = "http://www.w3.org/1999/xlink"
_ODF_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
_ODF_DRAW = "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0"
_ODF_SCRIPT = "urn:oasis:names:tc:opendocument:xmlns:script:1.0"
_ODF_PRESENTATION = "urn:oasis:names:tc:opendocument:xmlns:presentation:1.0"
_PKG_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
_WORDML = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"

# ODF elements whose link is only followed when a reader clicks it
_ODF_CLICK_ONLY = {
    (_ODF_TEXT, "a"),
    (_ODF_DRAW, "a"),
    (_ODF_SCRIPT, "event-listener"),
    (_ODF_PRESENTATION, "event-listener"),
}
_SAFE_HYPERLINK = re.compile(r"^\s*(https?|mailto):", re.I)
INCLUDE_FIELD = re.compile(r"^\s*(INCLUDEPICTURE|INCLUDETEXT|INCLUDE|IMPORT|LINK|DDEAUTO|DDE)\b", re.I)
ODF_FORMATS = {"odt", "ods", "odp"}
_ODF_SCANNED = {"content.xml", "styles.xml", "meta.xml"}
OOXML_FORMATS = {"docx", "xlsx", "pptx"}

QName = tuple[str | None, str]  # (namespace URI, local name)
Rule = Callable[[QName, Mapping[QName, tuple[str, str]]], list[str]]


class Unsafe(Exception):
    """A file the guard cannot make safe; the message ends "cannot be converted safely: ..."."""


def rule_for(fmt: str, name: str) -> Rule | None:
    """The rule for part `name` of a `fmt` package, or None when the part cannot link out."""
    if fmt in ODF_FORMATS:
        # content, styles and meta (template link) of the document and of embedded
        # objects; macro libraries and dialogs are never rendered
        return _odf_rule if name.rpartition("/")[2] in _ODF_SCANNED else None
    if name.endswith(".rels"):
        return _rels_rule
    if fmt == "docx" and name.startswith("word/") and name.endswith(".xml"):
        return _wordml_rule
    return None


def _is_outside(value: str) -> bool:
    """Whether an ODF href leaves the package (URL, absolute path, ../ out of the root)."""
    from urllib.parse import unquote

    target = unquote(value).strip().replace("\\", "/")
    if not target or target.startswith("#"):
        return False
    scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*):", target)
    if scheme:
        return scheme.group(1).lower() != "vnd.sun.star.package"
    if target.startswith("/"):
        return True
    depth = 0
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _odf_rule(element: QName, attrs: Mapping[QName, tuple[str, str]]) -> list[str]:
    href = attrs.get((XLINK, "href"))
    if href is None or element in _ODF_CLICK_ONLY or not _is_outside(href[1]):
        return []
    return [href[0]]


def _rels_rule(element: QName, attrs: Mapping[QName, tuple[str, str]]) -> list[str]:
    if element != (_PKG_RELS, "Relationship"):
        return []
    mode = attrs.get((None, "TargetMode"), ("", ""))[1]
    target = attrs.get((None, "Target"))
    if target is None or mode.strip().lower() != "external":
        return []
    rel_type = attrs.get((None, "Type"), ("", ""))[1]
    # LibreOffice looks relationships up by id whatever their type, so a "hyperlink"
    # could be used as an image source: keep only web and mail hyperlinks
    if rel_type.endswith("/hyperlink") and _SAFE_HYPERLINK.match(target[1]):
        return []
    return [target[0]]


def _wordml_rule(element: QName, attrs: Mapping[QName, tuple[str, str]]) -> list[str]:
    instr = attrs.get((_WORDML, "instr"))
    if element == (_WORDML, "fldSimple") and instr and INCLUDE_FIELD.match(instr[1]):
        return [instr[0]]
    return []


# the name each rule needs to see before it picks anything
RULE_NAMES: dict[Rule, bytes] = {_odf_rule: b"href", _rels_rule: b"TargetMode", _wordml_rule: b"fldSimple"}

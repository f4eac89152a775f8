"""The link guard: office files lose their links to outside resources before LibreOffice reads them.

LibreOffice 7.4 still loads a linked image of an ODF drawing or an RTF INCLUDEPICTURE field
from any local path, whatever the profile's settings say, so `guard_links` strips links to
outside files from ODF, OOXML and RTF input (hyperlinks a reader clicks stay), and
`check_input` refuses zip packages beyond our limits before anything decodes them.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import xml.sax
import xml.sax.handler
import xml.sax.xmlreader
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from defusedxml.common import DefusedXmlException
from defusedxml.expatreader import DefusedExpatParser

from converters.base import ConversionError

MAX_PARTS = 20_000
MAX_UNPACKED_BYTES = 2 * 1024**3
MAX_XML_PART_BYTES = 256 * 1024**2

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
_INCLUDE_FIELD = re.compile(r"^\s*(INCLUDEPICTURE|INCLUDETEXT|INCLUDE|IMPORT|LINK|DDEAUTO|DDE)\b", re.I)
_ODF_FORMATS = {"odt", "ods", "odp"}
_ODF_SCANNED = {"content.xml", "styles.xml", "meta.xml"}
_OOXML_FORMATS = {"docx", "xlsx", "pptx"}

QName = tuple[str | None, str]  # (namespace URI, local name)
Rule = Callable[[QName, Mapping[QName, tuple[str, str]]], list[str]]


class _Unsafe(Exception):
    pass


def guard_links(src: Path, fmt: str, dest_dir: Path) -> tuple[Path, list[str]]:
    """Return a copy of src without links to outside resources, and the links removed.

    Links are removed, not followed: a linked image disappears, an INCLUDETEXT field shows
    its stored result. Hyperlinks a reader clicks stay. Returns src itself when it holds
    nothing to remove. Binary formats (doc, xls, ppt) are returned unchanged.
    """
    try:
        if fmt in _ODF_FORMATS or fmt in _OOXML_FORMATS:
            return _guard_package(src, fmt, dest_dir)
        if fmt == "rtf":
            return _guard_rtf(src, dest_dir)
    except _Unsafe as exc:
        raise ConversionError(
            f"This {fmt} file cannot be converted safely: {exc}.",
            hint="Open and save it again in an office program, then upload it again.",
        ) from None
    return src, []


def check_input(src: Path, fmt: str) -> None:
    """Cheap structural checks before any decoding: a zip package within its limits."""
    if fmt not in _ODF_FORMATS and fmt not in _OOXML_FORMATS and fmt != "epub":
        return
    try:
        with zipfile.ZipFile(src) as zin:
            _check_package(zin.infolist())
    except (zipfile.BadZipFile, OSError):
        raise ConversionError(
            f"This is not a valid {fmt} file (it is not a zip package).",
            hint=f"Check that the file really is {fmt}.",
        ) from None
    except _Unsafe as exc:
        raise ConversionError(
            f"This {fmt} file cannot be converted safely: {exc}.",
            hint="Open and save it again in an office program, then upload it again.",
        ) from None


def _guard_package(src: Path, fmt: str, dest_dir: Path) -> tuple[Path, list[str]]:
    try:
        zin = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError):
        raise ConversionError(
            f"This is not a valid {fmt} file (it is not a zip package).",
            hint=f"Check that the file really is {fmt}.",
        ) from None
    with zin:
        infos = zin.infolist()
        _check_package(infos)
        patches: dict[str, bytes] = {}
        removed: list[str] = []
        for info in infos:
            rule = _rule_for(fmt, info.filename)
            if rule is None:
                continue
            if info.file_size > MAX_XML_PART_BYTES:
                raise _Unsafe(f"its part {info.filename} declares {info.file_size} bytes")
            try:
                data = zin.read(info)
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError) as exc:
                raise _Unsafe(f"its part {info.filename} cannot be read ({exc})") from None
            patched, links = _patch_xml(data, rule, info.filename)
            if links:
                patches[info.filename] = patched
                removed += links
        if not patches:
            return src, []
        dest = _new_file(dest_dir, fmt)
        with zipfile.ZipFile(dest, "w") as zout:
            for info in infos:
                if info.filename in patches:
                    zout.writestr(info, patches[info.filename], compress_type=info.compress_type)
                    continue
                with zin.open(info) as fin, zout.open(info, "w") as fout:
                    shutil.copyfileobj(fin, fout, 1024 * 1024)
    return dest, removed


def _new_file(dest_dir: Path, fmt: str) -> Path:
    # a name of its own: the input itself may sit in dest_dir under any name
    fd, name = tempfile.mkstemp(prefix="guarded-", suffix=f".{fmt}", dir=dest_dir)
    os.close(fd)
    return Path(name)


def _check_package(infos: list[zipfile.ZipInfo]) -> None:
    if len(infos) > MAX_PARTS:
        raise _Unsafe(f"it holds {len(infos)} parts, over the limit of {MAX_PARTS}")
    total = sum(i.file_size for i in infos)
    if total > MAX_UNPACKED_BYTES:
        raise _Unsafe(
            f"it declares {total / 1024**3:.1f} GB unpacked, over the "
            f"{MAX_UNPACKED_BYTES / 1024**3:.0f} GB limit"
        )
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        # two parts of one name: we would check one and LibreOffice might read the other
        raise _Unsafe("it holds two parts with the same name")


def _rule_for(fmt: str, name: str) -> Rule | None:
    if fmt in _ODF_FORMATS:
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
    if element == (_WORDML, "fldSimple") and instr and _INCLUDE_FIELD.match(instr[1]):
        return [instr[0]]
    return []


# the name each rule needs to see before it picks anything
_RULE_NAMES: dict[Rule, bytes] = {_odf_rule: b"href", _rels_rule: b"TargetMode", _wordml_rule: b"fldSimple"}


class _Scanner(DefusedExpatParser):
    """defusedxml's SAX parser (no entities, no external references) that also refuses a
    DTD internal subset, whose attribute defaults would not show in the bytes we edit."""

    def __init__(self, part: str) -> None:
        super().__init__()
        self.part = part

    _parser: Any  # expatreader's pyexpat parser, set by reset() (not in the stubs)

    def reset(self) -> None:
        super().reset()
        self._parser.StartDoctypeDeclHandler = self._doctype

    def _doctype(self, name: str, sysid: str | None, pubid: str | None, internal: int) -> None:
        if internal:
            raise _Unsafe(f"its part {self.part} declares its own DTD")

    def byte_index(self) -> int:
        return int(self._parser.CurrentByteIndex)


class _Finder(xml.sax.handler.ContentHandler):
    """Collects (byte offset, attribute qname, value) of the attributes a rule picks."""

    def __init__(self, scanner: _Scanner, rule: Rule) -> None:
        super().__init__()
        self.scanner = scanner
        self.rule = rule
        self.scopes: list[dict[str, str]] = [{"xml": "http://www.w3.org/XML/1998/namespace"}]
        self.hits: list[tuple[int, str, str]] = []

    def startElement(self, name: str, attrs: xml.sax.xmlreader.AttributesImpl) -> None:
        scope = dict(self.scopes[-1])
        plain: dict[str, str] = {}
        for key in attrs.getNames():
            if key == "xmlns":
                scope[""] = attrs[key]
            elif key.startswith("xmlns:"):
                scope[key[6:]] = attrs[key]
            else:
                plain[key] = attrs[key]
        self.scopes.append(scope)

        def resolve(qname: str, is_element: bool) -> QName:
            prefix, _, local = qname.rpartition(":")
            if not prefix:
                return (scope.get("") if is_element else None, local)
            return (scope.get(prefix, f"undeclared:{prefix}"), local)

        resolved = {resolve(k, False): (k, v) for k, v in plain.items()}
        for qname in self.rule(resolve(name, True), resolved):
            self.hits.append((self.scanner.byte_index(), qname, plain[qname]))

    def endElement(self, name: str) -> None:
        self.scopes.pop()


def _cannot_match(data: bytes, rule: Rule) -> bool:
    """Whether the part's bytes show that `rule` has nothing to pick (then it is not parsed:
    a one-page DOCX spends ~10 ms in the parser otherwise, on every job).

    Each rule picks nothing unless a name it looks for is written in the part, as names
    are: literally, never as character references. That holds only in an encoding where
    ASCII is itself (no NUL bytes, no UTF-16/32 byte-order mark, no other encoding declared)
    and without a DTD, whose attribute defaults and entities would not show in the bytes;
    anything else is parsed, and refused there if it declares entities.
    """
    needle = _RULE_NAMES.get(rule)
    return (
        needle is not None
        and needle not in data
        and b"\x00" not in data
        and b"<!DOCTYPE" not in data
        and not data.startswith((b"\xff\xfe", b"\xfe\xff"))
        and not _OTHER_ENCODING.match(data, 0, 200)
    )


_OTHER_ENCODING = re.compile(rb"\s*<\?xml[^>]*encoding\s*=\s*[\"'](?!utf-?8[\"'])", re.I)


def _patch_xml(data: bytes, rule: Rule, part: str) -> tuple[bytes, list[str]]:
    """Empty the attributes `rule` picks; return the new bytes and the removed values.

    defusedxml parses the part only to find the attributes; the bytes are then edited in
    place, so the rest of the part stays exactly as it was (re-serialising would drop the
    namespace declarations that only attribute values such as formulas use).
    """
    if _cannot_match(data, rule):
        return data, []
    scanner = _Scanner(part)
    finder = _Finder(scanner, rule)
    scanner.setContentHandler(finder)
    try:
        scanner.parse(io.BytesIO(data))
    except DefusedXmlException:
        raise _Unsafe(f"its part {part} declares XML entities or external references") from None
    except xml.sax.SAXParseException as exc:
        raise _Unsafe(f"its part {part} is not well-formed XML ({exc}); is it encrypted?") from None
    hits = finder.hits
    if not hits:
        return data, []
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or re.match(
        rb"<\?xml[^>]*encoding\s*=\s*[\"'](?!utf-?8)", data[:200], re.I
    ):
        raise _Unsafe(f"its part {part} links to outside files and is not UTF-8")
    out = bytearray(data)
    for offset, qname, _value in sorted(hits, reverse=True):
        tag_end = data.find(b"<", offset + 1)  # '<' cannot occur inside an attribute value
        pattern = re.compile(rb"\s" + re.escape(qname.encode()) + rb"\s*=\s*(\"[^\"]*\"|'[^']*')")
        match = pattern.search(data, offset, tag_end if tag_end > 0 else len(data))
        if match is None:
            raise _Unsafe(f"its part {part} links to outside files in an unusual way")
        start_at, end_at = match.span(1)
        out[start_at + 1 : end_at - 1] = b""
    return bytes(out), [value for _o, _q, value in hits]


# RTF: fields whose instruction includes outside content, and linked shape pictures
_RTF_FLDINST = re.compile(rb"\\fldinst(?![a-zA-Z])")
_RTF_SHAPE_NAME = re.compile(rb"\\sn(?![a-zA-Z])")
_RTF_LINKED_OBJECT = re.compile(rb"\\obj(?:aut)?link(?![a-zA-Z])")
_RTF_LINKED_SHAPE_PROPS = {"pibname", "fillblipname"}


def _guard_rtf(src: Path, dest_dir: Path) -> tuple[Path, list[str]]:
    data = src.read_bytes()
    edits: list[tuple[int, int, bytes]] = []
    removed: list[str] = []
    for match in _RTF_FLDINST.finditer(data):
        start, end = _rtf_group(data, match.start())
        text = _rtf_text(data[match.end() : end])
        if _INCLUDE_FIELD.match(text):
            edits.append((start, end, rb"{\*\fldinst }"))
            removed.append(text.strip()[:200])
    for match in _RTF_SHAPE_NAME.finditer(data):
        start, end = _rtf_group(data, match.start())
        if _rtf_text(data[match.end() : end]).strip().lower() in _RTF_LINKED_SHAPE_PROPS:
            edits.append((start, end, rb"{\sn convertdRemovedLink}"))
            removed.append("linked shape picture")
    for match in _RTF_LINKED_OBJECT.finditer(data):
        edits.append((match.start(), match.end(), rb"\objemb"))
        removed.append("linked object")
    if not edits:
        return src, []
    out = bytearray(data)
    last = len(data) + 1
    for start, end, repl in sorted(edits, reverse=True):
        if end > last:  # nested in an edit already made
            continue
        out[start:end] = repl
        last = start
    dest = _new_file(dest_dir, "rtf")
    dest.write_bytes(bytes(out))
    return dest, removed


def _rtf_group(data: bytes, pos: int) -> tuple[int, int]:
    """Bounds [start, end) of the {...} group around pos."""
    depth = 0
    start = pos
    i = pos - 1
    while i >= 0:
        c = data[i]
        if c in b"{}" and not _escaped(data, i):
            if c == ord("}"):
                depth += 1
            elif depth == 0:
                start = i
                break
            else:
                depth -= 1
        i -= 1
    depth = 0
    i = pos
    while i < len(data):
        c = data[i]
        if c == ord("\\"):
            i += 2
            continue
        if c == ord("{"):
            depth += 1
        elif c == ord("}"):
            if depth == 0:
                return start, i + 1
            depth -= 1
        i += 1
    return start, len(data)


def _escaped(data: bytes, i: int) -> bool:
    n = 0
    while i - 1 - n >= 0 and data[i - 1 - n] == ord("\\"):
        n += 1
    return n % 2 == 1


def _rtf_text(chunk: bytes) -> str:
    """The text of an RTF fragment as a reader sees it: escapes decoded, controls dropped."""
    out = io.StringIO()
    i = 0
    while i < len(chunk):
        c = chunk[i]
        if c == ord("\\"):
            m = re.match(rb"\\'([0-9a-fA-F]{2})", chunk[i:])
            if m:
                out.write(chr(int(m.group(1), 16)))
                i += m.end()
                continue
            m = re.match(rb"\\u(-?\d+) ?(\\'[0-9a-fA-F]{2}|[^\\{}])?", chunk[i:])
            if m:
                out.write(chr(int(m.group(1)) % 65536))
                i += m.end()
                continue
            m = re.match(rb"\\[a-zA-Z]+-?\d* ?", chunk[i:])
            if m:
                i += m.end()
                continue
            if i + 1 < len(chunk) and chunk[i + 1] in b"\\{}":
                out.write(chr(chunk[i + 1]))
            i += 2
            continue
        if c not in b"{}\r\n":
            out.write(chr(c))
        i += 1
    return out.getvalue()

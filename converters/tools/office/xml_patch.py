"""Editing links out of an XML part in place: defusedxml finds them, the bytes are cut.

`patch_xml` parses a part only to learn where the attributes a rule picks are, then empties
their values in the original bytes (re-serialising would drop namespace declarations that only
attribute values such as formulas use). A part that cannot hold a match is not parsed at all.
"""

from __future__ import annotations

import io
import re
import xml.sax
import xml.sax.handler
import xml.sax.xmlreader
from typing import Any

from defusedxml.common import DefusedXmlException
from defusedxml.expatreader import DefusedExpatParser

from converters.tools.office.link_rules import RULE_NAMES, QName, Rule, Unsafe


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
            raise Unsafe(f"its part {self.part} declares its own DTD")

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
    needle = RULE_NAMES.get(rule)
    return (
        needle is not None
        and needle not in data
        and b"\x00" not in data
        and b"<!DOCTYPE" not in data
        and not data.startswith((b"\xff\xfe", b"\xfe\xff"))
        and not _OTHER_ENCODING.match(data, 0, 200)
    )


_OTHER_ENCODING = re.compile(rb"\s*<\?xml[^>]*encoding\s*=\s*[\"'](?!utf-?8[\"'])", re.I)


def patch_xml(data: bytes, rule: Rule, part: str) -> tuple[bytes, list[str]]:
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
        raise Unsafe(f"its part {part} declares XML entities or external references") from None
    except xml.sax.SAXParseException as exc:
        raise Unsafe(f"its part {part} is not well-formed XML ({exc}); is it encrypted?") from None
    hits = finder.hits
    if not hits:
        return data, []
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or re.match(
        rb"<\?xml[^>]*encoding\s*=\s*[\"'](?!utf-?8)", data[:200], re.I
    ):
        raise Unsafe(f"its part {part} links to outside files and is not UTF-8")
    out = bytearray(data)
    for offset, qname, _value in sorted(hits, reverse=True):
        tag_end = data.find(b"<", offset + 1)  # '<' cannot occur inside an attribute value
        pattern = re.compile(rb"\s" + re.escape(qname.encode()) + rb"\s*=\s*(\"[^\"]*\"|'[^']*')")
        match = pattern.search(data, offset, tag_end if tag_end > 0 else len(data))
        if match is None:
            raise Unsafe(f"its part {part} links to outside files in an unusual way")
        start_at, end_at = match.span(1)
        out[start_at + 1 : end_at - 1] = b""
    return bytes(out), [value for _o, _q, value in hits]

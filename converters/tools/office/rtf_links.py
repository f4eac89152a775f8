"""The link guard for RTF: INCLUDE* fields, linked shape pictures and linked objects.

RTF is edited as bytes: each field instruction and shape property is read as a reader sees it
(escapes decoded), and the groups that link outside are replaced by harmless ones.
"""

from __future__ import annotations

import io
import re

from converters.tools.office.link_rules import INCLUDE_FIELD

# RTF: fields whose instruction includes outside content, and linked shape pictures
_RTF_FLDINST = re.compile(rb"\\fldinst(?![a-zA-Z])")
_RTF_SHAPE_NAME = re.compile(rb"\\sn(?![a-zA-Z])")
_RTF_LINKED_OBJECT = re.compile(rb"\\obj(?:aut)?link(?![a-zA-Z])")
_RTF_LINKED_SHAPE_PROPS = {"pibname", "fillblipname"}


def unlink(data: bytes) -> tuple[bytes, list[str]]:
    """The RTF without its links to outside content, and what was removed (data itself if none)."""
    edits: list[tuple[int, int, bytes]] = []
    removed: list[str] = []
    for match in _RTF_FLDINST.finditer(data):
        start, end = _rtf_group(data, match.start())
        text = _rtf_text(data[match.end() : end])
        if INCLUDE_FIELD.match(text):
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
        return data, []
    out = bytearray(data)
    last = len(data) + 1
    for start, end, repl in sorted(edits, reverse=True):
        if end > last:  # nested in an edit already made
            continue
        out[start:end] = repl
        last = start
    return bytes(out), removed


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

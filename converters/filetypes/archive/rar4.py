"""A minimal RAR 4 writer (stored, no compression).

Used to prove at start-up that libarchive really reads RAR here, and by the tests to make
RAR archives (benign and hostile) without the proprietary `rar` tool. Not offered as an
output format: RAR is read-only in Convertd.
"""

from __future__ import annotations

import stat
import struct
import zlib
from collections.abc import Iterable

_MARKER = b"Rar!\x1a\x07\x00"
_DOS_TIME = (44 << 25) | (1 << 21) | (1 << 16)  # 2024-01-01 00:00


def _block(kind: int, flags: int, body: bytes) -> bytes:
    rest = struct.pack("<BHH", kind, flags, 7 + len(body)) + body
    return struct.pack("<H", zlib.crc32(rest) & 0xFFFF) + rest


def rar4(members: Iterable[tuple[str, bytes, int]], *, declared: int | None = None) -> bytes:
    """(name, data, st_mode) -> RAR 4 bytes. `declared` forges every unpacked size."""
    out = _MARKER + _block(0x73, 0, bytes(6))
    for name, data, mode in members:
        raw = name.encode()
        flags = 0x8000 | (0xE0 if stat.S_ISDIR(mode) else 0)
        unp = len(data) if declared is None else declared
        body = struct.pack(
            "<IIBIIBBHI", len(data), unp, 3, zlib.crc32(data), _DOS_TIME, 29, 0x30, len(raw), mode
        )
        out += _block(0x74, flags, body + raw) + data
    return out + _block(0x7B, 0x4000, b"")

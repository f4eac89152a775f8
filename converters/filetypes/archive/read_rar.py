"""Reading RAR archives through libarchive (read only: no free RAR writer exists).

Entries become `Member`s and their blocks go to a `Staging`; libarchive never writes to disk.
"""

from __future__ import annotations

import ctypes
import functools
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from converters.base import ConversionError
from converters.filetypes.archive.readers import DAMAGED, Progress, damaged
from converters.filetypes.archive.safety import Audit, Kind, Member, MiB, Staging

try:
    import libarchive
    import libarchive.exception
    import libarchive.ffi
except Exception:  # pragma: no cover - libarchive.so missing fails in several ways
    libarchive = None


def _rar_member(e: Any) -> Member:
    """`e`: a libarchive-c ArchiveEntry (the library has no type information)."""
    kind: Kind
    if e.isdir:
        kind = "dir"
    elif e.issym:
        kind = "symlink"
    elif e.islnk:
        kind = "hardlink"
    elif e.isblk or e.ischr:
        kind = "device"
    elif e.isfifo:
        kind = "fifo"
    elif e.isreg:
        kind = "file"
    else:
        kind = "other"
    name = e.pathname or ""
    link = e.linkpath if kind == "hardlink" else None
    return Member(
        name if isinstance(name, str) else name.decode("utf-8", "replace"),
        kind,
        e.size if kind == "file" else None,
        e.perm,
        e.mtime,
        link,
    )


def _rar_blocks(entry: Any) -> Iterator[bytes]:
    # Not entry.get_blocks(): libarchive reports a CRC mismatch as a warning (-20), and
    # libarchive-c then yields a buffer of garbage instead of failing. Any negative is fatal.
    archive_p = entry._archive_p
    buf = ctypes.create_string_buffer(MiB)
    while (n := libarchive.ffi.read_data(archive_p, buf, MiB)) != 0:
        if n < 0:
            msg = libarchive.ffi.error_string(archive_p) or b"read error"
            raise libarchive.exception.ArchiveError(msg.decode("utf-8", "replace"))
        yield ctypes.string_at(buf, n)


def _rar_reader(path: Path) -> Any:  # libarchive-c's reader context (no type information)
    with path.open("rb") as f:
        head = f.read(8)
    # Only the RAR readers: a file sniffed as RAR must not be parsed as anything else.
    fmt = "rar5" if head.startswith(b"Rar!\x1a\x07\x01\x00") else "rar"
    return libarchive.file_reader(str(path), format_name=fmt, filter_name="none")


def _rar_errors() -> tuple[type[BaseException], ...]:
    return (*DAMAGED, libarchive.exception.ArchiveError)


def scan_rar(path: Path, audit: Audit) -> None:
    try:
        with _rar_reader(path) as arc:
            for e in arc:
                audit.add(_rar_member(e))
    except _rar_errors() as exc:
        raise damaged("rar", exc) from exc


def extract_rar(path: Path, staging: Staging, audit: Audit, progress: Progress) -> None:
    try:
        # Headers first (libarchive skips the data), then a second pass that writes.
        with _rar_reader(path) as arc:
            for e in arc:
                audit.add(_rar_member(e))
        total, n = audit.count, 0
        with _rar_reader(path) as arc:
            for e in arc:
                m = _rar_member(e)
                staging.add(m, _rar_blocks(e) if m.kind == "file" else None)
                n += 1
                progress(n / max(total, 1))
    except ConversionError:
        raise
    except _rar_errors() as exc:
        raise damaged("rar", exc) from exc


@functools.cache
def rar_unavailable() -> str | None:
    """Why RAR cannot be read here, or None."""
    if libarchive is None:
        return "libarchive-c or the libarchive shared library (Debian: libarchive13) is missing"
    try:
        with libarchive.memory_reader(_rar_probe_bytes(), format_name="rar") as arc:
            data = b"".join(b"".join(e.get_blocks()) for e in arc)
    except Exception as exc:  # any failure means no usable RAR reader
        return f"libarchive cannot read RAR: {exc}"
    return None if data == b"ok\n" else "libarchive read a RAR test archive wrongly"


def _rar_probe_bytes() -> bytes:
    from converters.filetypes.archive.rar4 import rar4

    return rar4([("a.txt", b"ok\n", stat.S_IFREG | 0o644)])

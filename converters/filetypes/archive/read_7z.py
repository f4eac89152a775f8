"""Reading 7z archives with py7zr: headers into `Member`s, files streamed into a `Staging`.

py7zr is asked for file objects (its WriterFactory), never to extract to disk itself.
"""

from __future__ import annotations

import contextlib
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from converters.base import ConversionError
from converters.filetypes.archive.readers import DAMAGED, Progress, damaged
from converters.filetypes.archive.safety import Audit, Kind, Member, Staging, kind_of_mode

try:
    import py7zr
    from py7zr.io import Py7zIO, WriterFactory
except ImportError:  # pragma: no cover - depends on the installation
    py7zr = None  # type: ignore[assignment]  # optional: 7z input drops out without it
    Py7zIO = WriterFactory = object  # type: ignore[misc,assignment]  # base classes never used then

HAVE_7Z = py7zr is not None


def _7z_member(f: Any) -> Member:
    """`f`: one of py7zr's file entries (SevenZipFile.files)."""
    kind: Kind
    if f.is_directory:
        kind = "dir"
    elif f.is_symlink or f.is_junction:
        kind = "symlink"
    elif f.st_fmt is not None and not stat.S_ISREG(f.st_fmt):
        kind = kind_of_mode(f.st_fmt) or "other"
    else:
        kind = "file"
    mtime = None
    if f.lastwritetime is not None:
        with contextlib.suppress(ValueError, OverflowError, OSError):
            mtime = f.lastwritetime.totimestamp()
    size = (f.uncompressed or 0) if kind == "file" else None
    return Member(f.filename, kind, size, f.posix_mode or 0o644, mtime)


def _7z_errors() -> tuple[type[BaseException], ...]:
    return (
        *DAMAGED,
        py7zr.exceptions.ArchiveError,
        py7zr.exceptions.PasswordRequired,
        py7zr.exceptions.UnsupportedCompressionMethodError,
        KeyError,
        IndexError,
    )


def _7z_open(fp: BinaryIO) -> py7zr.SevenZipFile:
    z = py7zr.SevenZipFile(fp, "r")  # a file object (not a path) keeps py7zr single-threaded
    if z.needs_password():
        z.close()
        raise ConversionError(
            "The 7z archive is password-protected.",
            hint="Encrypted archives are not supported; send it without a password.",
        )
    return z


def scan_7z(path: Path, audit: Audit) -> None:
    try:
        with path.open("rb") as fp, _7z_open(fp) as z:
            for f in z.files:
                audit.add(_7z_member(f))
    except _7z_errors() as exc:
        raise damaged("7z", exc) from exc


class _Discard(Py7zIO):
    def write(self, s: bytes | bytearray) -> int:
        return len(s)

    def read(self, size: int | None = None) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def flush(self) -> None:
        pass

    def size(self) -> int:
        return 0


class _ToStaging(Py7zIO):
    """py7zr pushes a file's bytes here; they go through a Staging sink with its limits."""

    def __init__(self, staging: Staging, member: Member, on_close: Callable[[], None]) -> None:
        self._sink = staging.begin(member)
        self._on_close = on_close

    def write(self, s: bytes | bytearray) -> int:
        return self._sink.write(s) if self._sink else len(s)

    def read(self, size: int | None = None) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def flush(self) -> None:
        pass

    def size(self) -> int:
        return self._sink.written if self._sink else 0

    def close(self) -> None:
        if self._sink:
            self._sink.close()
        self._on_close()


class _Factory(WriterFactory):
    """Maps py7zr's per-entry output names back to the entries we audited."""

    def __init__(
        self, staging: Staging, by_key: dict[str, list[Member]], progress: Progress, total: int
    ) -> None:
        self.staging, self.by_key, self.progress, self.total = staging, by_key, progress, total
        self.done = 0
        self.opened: set[int] = set()

    def create(self, filename: str) -> Py7zIO:
        queue = self.by_key.get(filename)
        if not queue:
            raise ConversionError(
                f"The 7z entry '{filename[:200]}' does not match the archive's directory.",
                hint="The archive is damaged or forged.",
            )
        m = queue.pop(0)
        self.opened.add(id(m))
        if m.kind != "file":
            self.staging.add(m)  # records the skip; data is discarded
            return _Discard()
        return _ToStaging(self.staging, m, self._closed)

    def _closed(self) -> None:
        self.done += 1
        self.progress(min(self.done / max(self.total, 1), 1.0))


def extract_7z(path: Path, staging: Staging, audit: Audit, progress: Progress) -> None:
    from py7zr.helpers import get_sanitized_output_path

    try:
        with path.open("rb") as fp, _7z_open(fp) as z:
            files = list(z.files)
            members = [_7z_member(f) for f in files]
            for m in members:
                audit.add(m)
            # py7zr names each output like this before asking the factory for a writer;
            # rebuild the same keys (duplicates get "_N") to find our member again.
            by_key: dict[str, list[Member]] = {}
            seen: dict[str, int] = {}
            for f, m in zip(files, members, strict=True):
                if f.filename not in seen:
                    out, seen[f.filename] = f.filename, 0
                else:
                    out = f"{f.filename}_{seen[f.filename]}"
                    seen[f.filename] += 1
                if m.kind == "dir":
                    staging.add(m)
                    continue
                key = get_sanitized_output_path(out, None).as_posix()
                by_key.setdefault(key, []).append(m)
            factory = _Factory(staging, by_key, progress, len(files))
            z.extractall(factory=factory)
            # Empty files have no stream and may never be opened: create them now.
            for m in members:
                if m.kind != "dir" and id(m) not in factory.opened:
                    staging.add(m, ())
    except ConversionError:
        raise
    except _7z_errors() as exc:
        raise damaged("7z", exc) from exc

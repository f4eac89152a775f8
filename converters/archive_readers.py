"""Reading archives: recognise the container, list its headers, stream its files out.

Every reader turns its library's entries into `Member`s and hands the bytes to a `Staging`
(see archive_safety); no library is ever asked to extract to disk itself.
"""

from __future__ import annotations

import bz2
import contextlib
import ctypes
import datetime
import functools
import gzip
import lzma
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

from converters.archive_safety import Audit, Kind, Member, MiB, Staging, kind_of_mode
from converters.base import ConversionError

try:
    import py7zr
    from py7zr.io import Py7zIO, WriterFactory
except ImportError:  # pragma: no cover - depends on the installation
    py7zr = None  # type: ignore[assignment]  # optional: 7z input drops out without it
    Py7zIO = WriterFactory = object  # type: ignore[misc,assignment]  # base classes never used then

HAVE_7Z = py7zr is not None

try:
    import libarchive
    import libarchive.exception
    import libarchive.ffi
except Exception:  # pragma: no cover - libarchive.so missing fails in several ways
    libarchive = None

Progress = Callable[[float], None]

# Compressed single streams and the tar they may hold.
_COMPRESSED = {"gz": "tar.gz", "bz2": "tar.bz2", "xz": "tar.xz"}
_OPENERS: dict[str, Callable[..., Any]] = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}
_DAMAGED = (
    zipfile.BadZipFile,
    tarfile.TarError,
    EOFError,
    OSError,
    zlib.error,
    lzma.LZMAError,
    ValueError,
    NotImplementedError,
)


def damaged(fmt: str, exc: BaseException) -> ConversionError:
    # libarchive's errors carry pointers and codes in str(); its .msg is the readable part
    detail = str(getattr(exc, "msg", None) or exc).strip()[:200] or type(exc).__name__
    return ConversionError(
        f"The {fmt} archive cannot be read: {detail}.",
        hint="The file is damaged, truncated, password-protected or uses an unsupported method.",
    )


# --- recognising the container -------------------------------------------------------------


def _looks_like_tar(block: bytes, *, empty_ok: bool = False) -> bool:
    if len(block) < 512:
        return False
    if block[:512] == bytes(512):
        # An empty tar is all zeros, but so is a compressed file of zeros (a classic bomb)
        return empty_ok
    try:
        tarfile.TarInfo.frombuf(block[:512], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def sniff(path: Path) -> str | None:
    """The container a file really is: zip, 7z, rar, tar, tar.gz, gz, ... or None."""
    with path.open("rb") as f:
        head = f.read(1024)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return "zip"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "7z"
    if head.startswith(b"Rar!\x1a\x07"):
        return "rar"
    for short, magic in (("gz", b"\x1f\x8b"), ("bz2", b"BZh"), ("xz", b"\xfd7zXZ\x00")):
        if head.startswith(magic):
            try:
                with _OPENERS[short](path, "rb") as inner:
                    block = inner.read(512)
            except _DAMAGED:
                return short
            return _COMPRESSED[short] if _looks_like_tar(block) else short
    if _looks_like_tar(head, empty_ok=path.stat().st_size % 512 == 0):
        return "tar"
    if zipfile.is_zipfile(path):  # self-extracting or prefixed zips
        return "zip"
    return None


# --- zip -------------------------------------------------------------------------------------


def _zip_member(info: zipfile.ZipInfo) -> Member:
    mode = info.external_attr >> 16
    kind = kind_of_mode(mode) or ("dir" if info.is_dir() else "file")
    if info.is_dir() and kind == "file":
        kind = "dir"
    mtime = None
    with contextlib.suppress(ValueError, OverflowError):
        mtime = datetime.datetime(*info.date_time).timestamp()
    return Member(info.filename, kind, info.file_size, mode & 0o777, mtime)


def zip_declared_entries(path: Path) -> int | None:
    """The entry count in the end-of-central-directory record, read before zipfile parses
    the directory (zipfile loads all of it into memory: millions of tiny entries would fill
    the memory before any per-entry check ran)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        tail_at = max(0, size - 65_557)  # EOCD (22 bytes) + the longest comment
        f.seek(tail_at)
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or at + 22 > len(tail):
            return None
        count = int(struct.unpack_from("<H", tail, at + 10)[0])
        locator = at - 20
        if locator >= 0 and tail[locator : locator + 4] == b"PK\x06\x07":
            (zip64_at,) = struct.unpack_from("<Q", tail, locator + 8)
            f.seek(zip64_at)
            record = f.read(56)
            if len(record) == 56 and record[:4] == b"PK\x06\x06":
                count = max(count, int(struct.unpack_from("<Q", record, 32)[0]))
        return count


def _zip_open(path: Path, audit: Audit) -> zipfile.ZipFile:
    declared = zip_declared_entries(path)
    if declared is not None and declared > audit.bounds.max_members:
        raise ConversionError(
            f"The archive declares {declared} entries, more than the {audit.bounds.max_members} allowed.",
            hint="Split it into smaller archives.",
        )
    return zipfile.ZipFile(path)


def _zip_infos(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    for info in infos:
        if info.flag_bits & 0x1:
            raise ConversionError(
                f"The zip entry '{info.filename[:200]}' is password-protected.",
                hint="Encrypted archives are not supported; send it without a password.",
            )
    return infos


def scan_zip(path: Path, audit: Audit) -> None:
    try:
        with _zip_open(path, audit) as zf:
            for info in _zip_infos(zf):
                audit.add(_zip_member(info))
    except _DAMAGED as exc:
        raise damaged("zip", exc) from exc


def extract_zip(path: Path, staging: Staging, audit: Audit, progress: Progress) -> None:
    try:
        with _zip_open(path, audit) as zf:
            infos = _zip_infos(zf)
            members = [_zip_member(i) for i in infos]
            for m in members:  # all headers first: refuse before writing anything
                audit.add(m)
            for n, (info, m) in enumerate(zip(infos, members, strict=True), 1):
                if m.kind == "file":
                    with zf.open(info) as src:
                        staging.add(m, iter(functools.partial(src.read, MiB), b""))
                else:
                    staging.add(m)
                progress(n / len(infos))
    except _DAMAGED as exc:
        raise damaged("zip", exc) from exc


# --- tar (plain or compressed) ---------------------------------------------------------------


def _tar_member(ti: tarfile.TarInfo) -> Member:
    kind: Kind
    if ti.isreg():
        kind = "file"
    elif ti.isdir():
        kind = "dir"
    elif ti.issym():
        kind = "symlink"
    elif ti.islnk():
        kind = "hardlink"
    elif ti.ischr() or ti.isblk():
        kind = "device"
    elif ti.isfifo():
        kind = "fifo"
    else:
        kind = "other"
    return Member(
        ti.name,
        kind,
        ti.size if kind == "file" else None,
        ti.mode & 0o777,
        float(ti.mtime),
        ti.linkname if kind == "hardlink" else None,
    )


_TAR_READ_MODES: dict[str, Literal["r:", "r:gz", "r:bz2", "r:xz"]] = {
    "tar": "r:",
    "tar.gz": "r:gz",
    "tar.bz2": "r:bz2",
    "tar.xz": "r:xz",
}


def _tar_mode(fmt: str) -> Literal["r:", "r:gz", "r:bz2", "r:xz"]:
    return _TAR_READ_MODES[fmt]


def _tar_entries(path: Path, fmt: str) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    with path.open("rb") as raw, tarfile.open(fileobj=raw, mode=_tar_mode(fmt)) as tar:
        while (ti := tar.next()) is not None:
            yield tar, ti
            # tarfile keeps every header it has seen; the audit caps how many there can be.


def scan_tar(path: Path, fmt: str, audit: Audit) -> None:
    # Tar has no directory: listing it means reading (and decompressing) it to the end.
    # The audit stops at the first header over a limit, so a bomb is refused at its header.
    try:
        for _, ti in _tar_entries(path, fmt):
            audit.add(_tar_member(ti))
    except _DAMAGED as exc:
        raise damaged(fmt, exc) from exc


def extract_tar(path: Path, fmt: str, staging: Staging, audit: Audit, progress: Progress, count: int) -> None:
    """Unpack a tar already listed by scan_tar (`count` entries); headers are audited again."""
    try:
        for n, (tar, ti) in enumerate(_tar_entries(path, fmt), 1):
            m = _tar_member(ti)
            audit.add(m)
            if m.kind in ("file", "dir"):
                _tar_second_opinion(ti, staging)
            if m.kind == "file":
                src = tar.extractfile(ti)
                assert src is not None
                with src:
                    staging.add(m, iter(functools.partial(src.read, MiB), b""))
            else:
                staging.add(m)
            progress(n / max(count, n, 1))
    except _DAMAGED as exc:
        raise damaged(fmt, exc) from exc


def _tar_second_opinion(ti: tarfile.TarInfo, staging: Staging) -> None:
    # The standard library's 'data' filter agrees with our own rules for files and folders;
    # asking it too costs nothing and catches anything our name cleaning might miss. Links
    # are our own business (skipped, or hard links copied from inside the archive).
    try:
        tarfile.data_filter(ti, str(staging.root))
    except tarfile.FilterError as exc:
        raise ConversionError(
            f"The archive entry '{ti.name[:200]}' is refused: {exc}.",
            hint="Archives with absolute paths or '..' in their names are refused.",
        ) from None


# --- single compressed files (x.txt.gz) ------------------------------------------------------


def single_name(path: Path, fmt: str) -> str:
    name = path.name
    if name.lower().endswith("." + fmt):
        name = name[: -len(fmt) - 1]
    return name or "data"


def extract_single(path: Path, fmt: str, staging: Staging, audit: Audit, progress: Progress) -> None:
    # No trustworthy declared size (gzip's is mod 4 GiB, and per member): the sink's live
    # limits and ratio check are what stop a bomb here.
    m = Member(single_name(path, fmt), "file", None, 0o644, path.stat().st_mtime)
    audit.add(m)
    try:
        with _OPENERS[fmt](path, "rb") as src:
            staging.add(m, iter(functools.partial(src.read, MiB), b""))
    except _DAMAGED as exc:
        raise damaged(fmt, exc) from exc
    progress(1.0)


# --- 7z --------------------------------------------------------------------------------------


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
        *_DAMAGED,
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


# --- rar (libarchive, read only) -------------------------------------------------------------


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
    return (*_DAMAGED, libarchive.exception.ArchiveError)


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
    from converters.archive_rar4 import rar4

    return rar4([("a.txt", b"ok\n", stat.S_IFREG | 0o644)])

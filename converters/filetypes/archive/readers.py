"""Reading archives: recognise the container, list its headers, stream its files out.

Every reader turns its library's entries into `Member`s and hands the bytes to a `Staging`
(see safety.py); no library is ever asked to extract to disk itself. zip, tar and single
compressed files are read here, 7z in read_7z.py, RAR in read_rar.py.
"""

from __future__ import annotations

import bz2
import contextlib
import datetime
import functools
import gzip
import lzma
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from converters.base import ConversionError
from converters.filetypes.archive.safety import Audit, Kind, Member, MiB, Staging, kind_of_mode

Progress = Callable[[float], None]

# Compressed single streams and the tar they may hold.
_COMPRESSED = {"gz": "tar.gz", "bz2": "tar.bz2", "xz": "tar.xz"}
_OPENERS: dict[str, Callable[..., Any]] = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}
DAMAGED = (
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
            except DAMAGED:
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
    except DAMAGED as exc:
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
    except DAMAGED as exc:
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
    except DAMAGED as exc:
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
    except DAMAGED as exc:
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
    except DAMAGED as exc:
        raise damaged(fmt, exc) from exc
    progress(1.0)

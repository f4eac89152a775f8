"""Writing archives from files on disk: zip, tar (plain, gz, bz2, xz) and 7z."""

from __future__ import annotations

import os
import tarfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from converters.base import ConversionError

try:
    import py7zr
except ImportError:  # pragma: no cover - depends on the installation
    py7zr = None  # type: ignore[assignment]  # optional: 7z output drops out without it

Entry = tuple[Path, str, bool]  # (disk path, name in the archive, is a folder)
Progress = Callable[[float], None]

TAR_MODES = {"tar": "w:", "tar.gz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}


def _anonymous(ti: tarfile.TarInfo) -> tarfile.TarInfo:
    # The worker's user and group names are nobody's business; modes are normalised so no
    # setuid or world-writable bit ever travels from a hostile input to the output.
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.mode = 0o755 if ti.isdir() or ti.mode & 0o111 else 0o644
    return ti


def _write_tar(out: Path, fmt: str, level: int, entries: Sequence[Entry], progress: Progress) -> None:
    kwargs: dict[str, int] = {}
    if fmt == "tar.gz":
        kwargs["compresslevel"] = level
    elif fmt == "tar.bz2":
        kwargs["compresslevel"] = max(level, 1)  # bzip2 has no "store" level
    elif fmt == "tar.xz":
        kwargs["preset"] = level
    mode = TAR_MODES[fmt]  # typeshed overloads tarfile.open per literal mode, each with its own keywords:
    with tarfile.open(out, mode, format=tarfile.PAX_FORMAT, **kwargs) as tar:  # type: ignore[call-overload]  # ^
        for n, (path, arc, _) in enumerate(entries, 1):
            tar.add(path, arcname=arc, recursive=False, filter=_anonymous)
            progress(n / len(entries))


def _write_zip(out: Path, level: int, entries: Sequence[Entry], progress: Progress) -> None:
    method = zipfile.ZIP_DEFLATED if level else zipfile.ZIP_STORED
    with zipfile.ZipFile(
        out, "w", method, compresslevel=level or None, allowZip64=True, strict_timestamps=False
    ) as zf:
        for n, (path, arc, _) in enumerate(entries, 1):
            zf.write(path, arc)
            progress(n / len(entries))


def _write_7z(out: Path, level: int, entries: Sequence[Entry], progress: Progress) -> None:
    filters = [{"id": py7zr.FILTER_LZMA2, "preset": level}] if level else [{"id": py7zr.FILTER_COPY}]
    with py7zr.SevenZipFile(out, "w", filters=filters) as z:
        for n, (path, arc, _) in enumerate(entries, 1):
            z.write(path, arc)
            progress(n / len(entries))


def pack(entries: Sequence[Entry], out: Path, fmt: str, level: int, progress: Progress) -> None:
    """Write `entries` (files and folders, in order) to `out` as `fmt`."""
    try:
        if fmt == "zip":
            _write_zip(out, level, entries, progress)
        elif fmt == "7z":
            _write_7z(out, level, entries, progress)
        elif fmt in TAR_MODES:
            _write_tar(out, fmt, level, entries, progress)
        else:  # pragma: no cover - pairs() never offers anything else
            raise ConversionError(f"Cannot write '{fmt}' archives.", hint="Pick zip, tar or 7z.")
    except OSError as exc:
        if out.exists():
            os.unlink(out)
        raise ConversionError(
            f"Writing the {fmt} archive failed: {exc.strerror or exc}.",
            hint="The disk may be full; try again later or with a smaller input.",
        ) from exc

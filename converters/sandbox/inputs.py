"""A job's inputs, staged into its directory as private, read-only copies.

A job never gets the stored upload itself (not even a hard link it could rewrite through):
each input is copied into ``workdir/in/``, by reflink where the file system shares blocks,
else in the kernel, holes and all.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

_FICLONE = 0x40049409


def _copy_input(src: Path, dst: Path) -> None:
    """A private copy (a reflink where the file system shares blocks), never a hard link:
    a job must not be able to reach the stored upload, even to rewrite it."""
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        try:
            fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
        except OSError:
            _copy_data(fin.fileno(), fout.fileno(), os.fstat(fin.fileno()).st_size)
    os.chmod(dst, 0o444)


def _copy_data(fin: int, fout: int, size: int) -> None:
    """Copy in the kernel, only the parts that hold data: a sparse file stays sparse (and
    cheap), where reading it would write every zero of its holes."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fin, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            break
        end = os.lseek(fin, start, os.SEEK_HOLE)
        while start < end:
            try:
                done = os.copy_file_range(fin, fout, end - start, start, start)
            except OSError:  # across file systems on some kernels: copy it ourselves
                chunk = os.pread(fin, min(end - start, 1 << 20), start)
                done = os.pwrite(fout, chunk, start) if chunk else 0
            if done <= 0:
                break
            start += done
        pos = end
    os.ftruncate(fout, size)


def stage_inputs(inputs: list[Path], workdir: Path) -> list[str]:
    """Copy the inputs into workdir/in/ (read-only to the job), keeping their names; return those."""
    indir = workdir / "in"
    indir.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for src in inputs:
        src = Path(src)
        if src.parent.resolve() == indir.resolve():
            names.append(src.name)  # already staged by the caller
            continue
        name = src.name
        # a name starting with "-" reads as an option to command-line tools
        if name in ("", ".", "..") or name.startswith("-"):
            name = f"input{src.suffix}" if name in ("", ".", "..") else f"_{name}"
        stem, suffix = Path(name).stem, Path(name).suffix
        n = 1
        while name in names or (indir / name).exists():
            n += 1
            name = f"{stem}-{n}{suffix}"
        _copy_input(src, indir / name)
        names.append(name)
    return names

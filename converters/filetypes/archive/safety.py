"""Safety rules for unpacking untrusted archives.

Hostile archives are ordinary input. Everything an archive says about itself (names, sizes,
types) is checked twice: once from the headers before anything is written (`Audit`), and
again while bytes are written (`Staging` and its sinks), because headers can lie.

Policy, in one place:
- refused (the job fails): names that leave the folder ('..', absolute paths, drive
  letters, backslash tricks), more entries than allowed, declared or actual sizes over the
  limits, expansion ratios typical of compression bombs, entries holding more data than
  they declare, encrypted entries;
- skipped (listed in `Staging.skipped`): symbolic links, hard links whose target is not a
  file already taken from the same archive, device files, FIFOs, sockets, names that clash
  with an earlier file used as a folder, names too long or too deep to store;
- repaired: duplicate names get " (2)", over-long name parts are shortened with a hash,
  control and bidirectional-override characters become "_", names are NFC-normalised.
Nothing is ever extracted through a library's own extract(): files are created here, with
O_EXCL|O_NOFOLLOW, below a private folder that never holds a link.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import shutil
import stat
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from converters.base import ConversionError

Kind = Literal["file", "dir", "symlink", "hardlink", "device", "fifo", "other"]

MiB = 1024**2
GiB = 1024**3

# Linux allows 255 bytes per name part; keep room for a " (NN)" duplicate suffix.
_PART_BYTES = 240
# Relative path budget, well inside PATH_MAX (4096) once the work folder is prepended.
_PATH_BYTES = 3000
_MAX_DEPTH = 64

_DRIVE = re.compile(r"^[A-Za-z]:")
# Bidirectional controls make "gpj.exe" read as "exe.jpg"; the rest are invisible or unsafe.
_BIDI = set("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u061c")


@dataclasses.dataclass(frozen=True)
class Bounds:
    """What one archive may expand to. Defaults suit a 4 GiB output limit per job."""

    max_members: int = 10_000
    max_member_bytes: int = 1 * GiB
    max_total_bytes: int = 2 * GiB
    # Ordinary data rarely expands over ~100x; bombs expand 1000x and more. The ratio is
    # only judged past `ratio_floor` bytes so small, very compressible files stay fine.
    max_ratio: float = 250.0
    ratio_floor: int = 16 * MiB


@dataclasses.dataclass
class Member:
    """One archive entry as its headers describe it."""

    name: str
    kind: Kind
    size: int | None = None  # declared uncompressed size; None when the format has none
    mode: int | None = None  # permission bits, when known
    mtime: float | None = None
    link: str | None = None  # hard link target (archive-relative name)


class UnsafeName(Exception):
    """The name would land outside the extraction folder."""


def human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - loop always returns


def clean_name(raw: str | bytes) -> str:
    """Archive name -> safe relative POSIX path (maybe empty); UnsafeName if it escapes."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    # Undecodable bytes arrive as lone surrogates; they cannot be stored as UTF-8 later.
    name = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in raw)
    name = unicodedata.normalize("NFC", name)
    name = "".join("_" if (unicodedata.category(c) == "Cc" or c in _BIDI) else c for c in name)
    # Windows tools write backslashes; a name "..\\x" must not survive to a Windows unzip.
    name = name.replace("\\", "/")
    if name.startswith("/") or _DRIVE.match(name):
        raise UnsafeName("it is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeName("it climbs out of the archive folder with '..'")
    return "/".join(_fit(p) for p in parts)


def _fit(part: str) -> str:
    """Shorten a name part over the filesystem's limit, keeping its extension, unique by hash."""
    data = part.encode()
    if len(data) <= _PART_BYTES:
        return part
    stem, ext = os.path.splitext(part)
    if len(ext.encode()) > 16:
        stem, ext = part, ""
    tag = "~" + hashlib.sha1(data).hexdigest()[:8]
    room = _PART_BYTES - len(ext.encode()) - len(tag)
    short = stem.encode()[:room].decode("utf-8", "ignore")
    return short + tag + ext


def _unsafe(name: str, why: str) -> ConversionError:
    return ConversionError(
        f"The archive entry '{name[:200]}' would be written outside the archive folder: {why}.",
        hint="Archives with absolute paths or '..' in their names are refused; "
        "repack it with relative paths.",
    )


class Audit:
    """Declared-size checks, fed one header at a time, run before anything is written."""

    def __init__(self, bounds: Bounds, archive_bytes: int) -> None:
        self.bounds = bounds
        self.archive_bytes = max(archive_bytes, 1)
        self.count = 0
        self.total = 0

    def add(self, m: Member) -> None:
        b = self.bounds
        self.count += 1
        if self.count > b.max_members:
            raise ConversionError(
                f"The archive holds more than {b.max_members} entries.",
                hint="Split it into smaller archives.",
            )
        try:
            clean_name(m.name)
        except UnsafeName as exc:
            raise _unsafe(str(m.name), str(exc)) from None
        if m.kind != "file" or m.size is None:
            return
        if m.size > b.max_member_bytes:
            raise ConversionError(
                f"The archive entry '{m.name[:200]}' declares {human(m.size)}, "
                f"over the {human(b.max_member_bytes)} limit per file.",
                hint="Split the content into smaller files.",
            )
        self.total += m.size
        check_totals(self.total, self.archive_bytes, b, declared=True)


def check_totals(total: int, archive_bytes: int, b: Bounds, *, declared: bool) -> None:
    verb = "declares" if declared else "expands to"
    if total > b.max_total_bytes:
        raise ConversionError(
            f"The archive {verb} more than {human(b.max_total_bytes)} of content, over the limit.",
            hint="Split it into smaller archives.",
        )
    if total > b.ratio_floor and total / archive_bytes > b.max_ratio:
        raise ConversionError(
            f"The archive {verb} {human(total)} from {human(archive_bytes)} "
            f"(over {b.max_ratio:.0f} times its size): it looks like a compression bomb.",
            hint="Archives that expand this much are refused; if the content is genuine, "
            "send it uncompressed or split it.",
        )


class Sink:
    """Receives one file's bytes; stops as soon as the data breaks a limit or its header."""

    def __init__(self, staging: Staging, member: Member, path: Path) -> None:
        self.staging = staging
        self.member = member
        self.path = path
        self.written = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_BINARY", 0)
        perm = 0o755 if (member.mode or 0) & 0o111 else 0o644
        self._fd: int | None = os.open(path, flags, perm)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        if not n:
            return 0
        st, m, b = self.staging, self.member, self.staging.bounds
        self.written += n
        st.written += n
        if m.size is not None and self.written > m.size:
            raise ConversionError(
                f"The archive entry '{m.name[:200]}' holds more data than the "
                f"{human(m.size)} its header declares.",
                hint="The archive is damaged or forged.",
            )
        if self.written > b.max_member_bytes:
            raise ConversionError(
                f"The archive entry '{m.name[:200]}' expands past the "
                f"{human(b.max_member_bytes)} limit per file.",
                hint="Split the content into smaller files.",
            )
        check_totals(st.written, st.archive_bytes, b, declared=False)
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            # Not the archive's fault: keep it apart from "cannot be read" errors.
            raise ConversionError(
                f"Writing the extracted files failed: {exc.strerror or exc}.",
                hint="The server's disk may be full; try again later.",
            ) from exc
        return n

    def close(self) -> None:
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        if self.member.mtime is not None:
            # an absurd timestamp is not worth failing the job
            with contextlib.suppress(OverflowError, OSError, ValueError):
                os.utime(self.path, (self.member.mtime, self.member.mtime))


class Staging:
    """A private folder the archive's files are written to, with every rule enforced."""

    def __init__(self, root: Path, bounds: Bounds, archive_bytes: int) -> None:
        self.root = root
        self.bounds = bounds
        self.archive_bytes = max(archive_bytes, 1)
        self.written = 0
        self.entries: list[tuple[Path, str, bool]] = []  # (disk path, arcname, is_dir)
        self.skipped: list[str] = []
        self._files: dict[str, Path] = {}  # cleaned archive name -> disk path, for hard links
        self._root_real = os.path.realpath(root)
        root.mkdir(parents=True, exist_ok=True)

    @property
    def files(self) -> list[str]:
        return [arc for _, arc, is_dir in self.entries if not is_dir]

    def skip(self, name: str, why: str) -> None:
        self.skipped.append(f"{name[:200]}: {why}")

    def add(self, m: Member, chunks: Iterable[bytes] | None = None) -> None:
        """Take one entry: a folder, a file (its bytes from `chunks`), or skip it."""
        sink = self.begin(m)
        if sink is None:
            return
        try:
            for chunk in chunks or ():
                sink.write(chunk)
        finally:
            sink.close()

    def begin(self, m: Member) -> Sink | None:
        """Start one entry; returns a sink for a file's bytes, None for anything else."""
        try:
            rel = clean_name(m.name)
        except UnsafeName as exc:
            raise _unsafe(str(m.name), str(exc)) from None
        if m.kind in ("symlink", "device", "fifo", "other"):
            why = {
                "symlink": "symbolic link, not copied",
                "device": "device file, not copied",
                "fifo": "FIFO, not copied",
                "other": "special file, not copied",
            }[m.kind]
            self.skip(m.name, why)
            return None
        if not rel:
            self.skip(m.name, "empty name")
            return None
        if len(rel.encode()) > _PATH_BYTES or rel.count("/") >= _MAX_DEPTH:
            self.skip(m.name, "path too long or too deep")
            return None
        if m.kind == "dir":
            self._make_dir(m.name, rel)
            return None
        if m.kind == "hardlink":
            return self._hardlink(m, rel)
        path = self._claim(m.name, rel)
        if path is None:
            return None
        sink = Sink(self, m, path)
        arc = path.relative_to(self.root).as_posix()
        self.entries.append((path, arc, False))
        self._files.setdefault(rel, path)
        return sink

    def _hardlink(self, m: Member, rel: str) -> Sink | None:
        # A hard link is stored as a copy of a file already taken from this archive; links to
        # anything else (outside paths, /etc/passwd, later entries) are skipped.
        try:
            target = self._files.get(clean_name(m.link or ""))
        except UnsafeName:
            target = None
        if target is None:
            self.skip(m.name, "hard link to a file outside the archive, not copied")
            return None
        copy = Member(m.name, "file", target.stat().st_size, m.mode, m.mtime)
        path = self._claim(m.name, rel)
        if path is None:
            return None
        sink = Sink(self, copy, path)
        self.entries.append((path, path.relative_to(self.root).as_posix(), False))
        self._files.setdefault(rel, path)
        try:
            with target.open("rb") as src:
                while chunk := src.read(MiB):
                    sink.write(chunk)
        finally:
            sink.close()
        return None

    def _parent(self, name: str, rel: str) -> Path | None:
        parent = self.root
        for part in rel.split("/")[:-1]:
            parent = parent / part
            if os.path.lexists(parent) and not parent.is_dir():
                self.skip(name, f"its folder '{part}' is a file in the same archive")
                return None
        parent.mkdir(parents=True, exist_ok=True)
        self._inside(parent)
        return parent

    def _make_dir(self, name: str, rel: str) -> None:
        parent = self._parent(name, rel)
        if parent is None:
            return
        path = parent / rel.rsplit("/", 1)[-1]
        if os.path.lexists(path):
            if not path.is_dir():
                self.skip(name, "a file of the same name comes earlier in the archive")
            return
        path.mkdir()
        self.entries.append((path, rel, True))

    def _claim(self, name: str, rel: str) -> Path | None:
        """A fresh path for a file; duplicates get ' (2)', ' (3)', ..."""
        parent = self._parent(name, rel)
        if parent is None:
            return None
        leaf = rel.rsplit("/", 1)[-1]
        path = parent / leaf
        stem, ext = os.path.splitext(leaf)
        n = 1
        while os.path.lexists(path):
            n += 1
            path = parent / f"{stem} ({n}){ext}"
        return path

    def _inside(self, path: Path) -> None:
        # Belt and braces: nothing below root is ever a link, but prove it before writing.
        real = os.path.realpath(path)
        if real != self._root_real and not real.startswith(self._root_real + os.sep):
            raise ConversionError(
                "An archive entry resolved outside the extraction folder.",
                hint="The archive is refused.",
            )

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def kind_of_mode(mode: int) -> Kind | None:
    """File type from st_mode bits; None when no type bits are set."""
    fmt = stat.S_IFMT(mode)
    if not fmt:
        return None
    if stat.S_ISREG(fmt):
        return "file"
    if stat.S_ISDIR(fmt):
        return "dir"
    if stat.S_ISLNK(fmt):
        return "symlink"
    if stat.S_ISCHR(fmt) or stat.S_ISBLK(fmt):
        return "device"
    if stat.S_ISFIFO(fmt):
        return "fifo"
    return "other"

"""Archive converter: repack archives, extract them, or pack any files into one archive.

Two modes, chosen by the inputs:
- one input in an archive format (zip, tar, tar.gz, 7z, rar, gz, ...): its files are
  extracted into a private folder under every safety rule of `archive_safety`, then packed
  again in the output format. "Extract" is the same thing with output zip: the result is
  one zip, its files listed in `Result.items`.
- several inputs, or one input of any other format: the inputs themselves are packed,
  untouched (an archive among several inputs is stored as a file, never opened).

Multi-dot formats are written "tar.gz", "tar.bz2", "tar.xz"; tgz, tbz2 and txz are accepted
as the same formats.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar

from converters.base import ConversionError, Converter, Limits, Option, Result, Task
from converters.filetypes.archive import read_7z, read_rar, readers
from converters.filetypes.archive.safety import Audit, Bounds, Staging
from converters.filetypes.archive.writers import pack

ALIASES = {"tgz": "tar.gz", "tbz2": "tar.bz2", "txz": "tar.xz"}
TARS = ("tar", "tar.gz", "tar.bz2", "tar.xz")
SINGLES = ("gz", "bz2", "xz")
WRITABLE = ("zip", *TARS, "tgz", "tbz2", "txz")
# Formats a user may hand in to be packed as they are ("files -> archive"). Registry names
# are keyed by input format, so this is a broad list of common extensions.
_PLAIN = """
    pdf txt md rst csv tsv json jsonl xml yaml toml ini log html css js ts py sql rtf tex
    doc docx odt xls xlsx ods ppt pptx odp epub mobi azw3 fb2
    png jpg gif bmp tiff webp heic heif avif jxl svg ico psd raw
    mp3 wav flac ogg oga opus m4a aac wma aiff
    mp4 mkv mov avi webm wmv flv m4v mpg 3gp
    ttf otf woff woff2 bin dat iso img exe dmg apk jar deb rpm
"""
PLAIN_INPUTS = frozenset(_PLAIN.split())


def canonical(fmt: str) -> str:
    fmt = fmt.strip().lower().lstrip(".")
    return ALIASES.get(fmt, fmt)


class ArchiveConverter(Converter):
    filetype: ClassVar[str] = "archive"
    engine: ClassVar[str] = "zipfile+tarfile+py7zr+libarchive"
    multi_input: ClassVar[bool] = True
    limits: ClassVar[Limits] = Limits(cpu_seconds=600, wall_seconds=900)

    def __init__(self, bounds: Bounds | None = None) -> None:
        self.bounds = bounds or Bounds()
        self._scanned: dict[tuple[object, ...], Audit] = {}

    # --- what this machine offers -----------------------------------------------------------

    def unavailable(self) -> str | None:
        return None  # zip and tar come with Python; 7z and rar drop out on their own

    def unavailable_formats(self) -> dict[str, str]:
        """Formats left out on this machine, with the reason (for `convertd doctor`)."""
        missing: dict[str, str] = {}
        if not read_7z.HAVE_7Z:
            missing["7z"] = "py7zr is not installed"
        if reason := read_rar.rar_unavailable():
            missing["rar"] = reason
        return missing

    def _readable(self) -> tuple[str, ...]:
        out = ["zip", *TARS, "tgz", "tbz2", "txz", *SINGLES]
        if read_7z.HAVE_7Z:
            out.append("7z")
        if read_rar.rar_unavailable() is None:
            out.append("rar")
        return tuple(out)

    def _writable(self) -> frozenset[str]:
        return frozenset((*WRITABLE, "7z") if read_7z.HAVE_7Z else WRITABLE)

    def pairs(self) -> Mapping[str, frozenset[str]]:
        outs = self._writable()
        return {fmt: outs for fmt in (*self._readable(), *sorted(PLAIN_INPUTS))}

    def options(self, input_format: str, output_format: str) -> Mapping[str, Option]:
        if canonical(output_format) == "tar":
            return {}
        return {
            "compression_level": Option(
                "integer",
                "Compression level: 0 stores without compressing (fastest), 9 is smallest "
                "and slowest (bzip2 treats 0 as 1).",
                default=6,
                minimum=0,
                maximum=9,
            )
        }

    # --- the work ---------------------------------------------------------------------------

    def _source(self, task: Task) -> str | None:
        """The archive format to unpack, or None when the inputs are packed as they are."""
        fmt = canonical(task.input_format)
        if len(task.inputs) != 1 or fmt not in self._readable():
            return None
        return fmt

    def check(self, task: Task) -> None:
        self._check_inputs(task)
        declared = self._source(task)
        if declared is None:
            return
        path = task.inputs[0]
        self._scan(path, self._real_format(path, declared))

    def _check_inputs(self, task: Task) -> None:
        for path in task.inputs:
            # A link among the inputs would pack whatever it points at (/etc/passwd, ...).
            if path.is_symlink() or not path.is_file():
                raise ConversionError(
                    f"The input '{path.name}' is not a regular file.",
                    hint="Upload ordinary files.",
                )
        if len(task.inputs) > self.bounds.max_members:
            raise ConversionError(
                f"{len(task.inputs)} files are more than the {self.bounds.max_members} one archive may hold.",
                hint="Send fewer files per job.",
            )

    def _scan(self, path: Path, fmt: str) -> Audit:
        """Every header checked against the limits, before anything is extracted."""
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino, fmt)
        if key in self._scanned:  # check() ran in this process: no second pass over a tar
            return self._scanned[key]
        audit = Audit(self.bounds, st.st_size)
        if fmt == "zip":
            readers.scan_zip(path, audit)
        elif fmt in TARS:
            readers.scan_tar(path, fmt, audit)
        elif fmt == "7z":
            read_7z.scan_7z(path, audit)
        elif fmt == "rar":
            read_rar.scan_rar(path, audit)
        # single gz/bz2/xz streams declare nothing reliable: limits apply while writing
        self._scanned = {**dict(list(self._scanned.items())[-7:]), key: audit}
        return audit

    def _real_format(self, path: Path, declared: str) -> str:
        """The format to read the input as; refuses a file that is not what it claims."""
        found = readers.sniff(path)
        if found == declared:
            return found
        # "x.tar.gz" named as plain gz (or the reverse): the compression decides, the
        # content says whether a tar is inside.
        families = [(s, readers._COMPRESSED[s]) for s in SINGLES]
        if any(declared in fam and found in fam for fam in families):
            return found  # type: ignore[return-value]  # not None: it is in a family
        if found is None:
            raise ConversionError(
                f"The file is not a {declared} archive: its content is not any archive format we know.",
                hint="Check the file; to store it inside an archive, send it with its own "
                "extension (e.g. .pdf).",
            )
        raise ConversionError(
            f"The file is not a {declared} archive: its content is a {found} archive.",
            hint=f"Send it with the .{found} extension (input format '{found}').",
        )

    def convert(self, task: Task) -> Result:
        out_fmt = canonical(task.output_format)
        if out_fmt not in {canonical(f) for f in self._writable()}:
            raise ConversionError(f"Cannot write '{out_fmt}' archives.", hint="Pick zip, tar or 7z.")
        self._check_inputs(task)
        level = int(task.options.get("compression_level", 6))
        ext = task.output_format.strip().lower().lstrip(".")  # tgz stays tgz in the name
        progress = _Monotonic(task.progress)
        out_dir = Path(tempfile.mkdtemp(prefix="out-", dir=task.workdir))
        declared = self._source(task)

        if declared is None:
            entries = _plain_entries(task.inputs)
            name = task.inputs[0].stem if len(task.inputs) == 1 else "archive"
            out = out_dir / f"{_safe_stem(name)}.{ext}"
            progress(0.0)
            pack(entries, out, out_fmt, level, lambda f: progress(f))
            progress(1.0)
            return Result(out, [arc for _, arc, _ in entries])

        path = task.inputs[0]
        fmt = self._real_format(path, declared)
        staging = Staging(
            Path(tempfile.mkdtemp(prefix="files-", dir=task.workdir)),
            self.bounds,
            path.stat().st_size,
        )
        try:
            self._extract(path, fmt, staging, lambda f: progress(0.5 * f))
            out = out_dir / f"{_safe_stem(_archive_stem(path.name, fmt))}.{ext}"
            pack(staging.entries, out, out_fmt, level, lambda f: progress(0.5 + 0.5 * f))
        finally:
            staging.cleanup()
        progress(1.0)
        return Result(out, staging.files, notes=staging.skipped)

    def _extract(self, path: Path, fmt: str, staging: Staging, progress: Callable[[float], None]) -> None:
        # Zip, 7z and rar readers list all headers themselves first; a tar is listed once
        # here (or reused from check()) so nothing is written before every header passed.
        scanned = self._scan(path, fmt) if fmt in TARS else None
        audit = Audit(self.bounds, path.stat().st_size)
        if fmt == "zip":
            readers.extract_zip(path, staging, audit, progress)
        elif fmt in TARS:
            assert scanned is not None  # scanned above for every tar
            readers.extract_tar(path, fmt, staging, audit, progress, scanned.count)
        elif fmt in SINGLES:
            readers.extract_single(path, fmt, staging, audit, progress)
        elif fmt == "7z":
            read_7z.extract_7z(path, staging, audit, progress)
        elif fmt == "rar":
            read_rar.extract_rar(path, staging, audit, progress)
        else:  # pragma: no cover - _real_format returns only the above
            raise ConversionError(f"Cannot read '{fmt}' archives.", hint="")


class _Monotonic:
    """Progress never goes backwards, and equal values are not sent twice."""

    def __init__(self, sink: Callable[[float], None]) -> None:
        self.sink = sink
        self.last = -1.0

    def __call__(self, fraction: float) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        if fraction > self.last:
            self.last = fraction
            self.sink(fraction)


def _plain_entries(inputs: list[Path]) -> list[tuple[Path, str, bool]]:
    """Inputs stored under their own names; a repeated name gets ' (2)'."""
    used: set[str] = set()
    entries = []
    for path in inputs:
        stem, ext = os.path.splitext(path.name or "file")
        arc, n = path.name or "file", 1
        while arc in used:
            n += 1
            arc = f"{stem} ({n}){ext}"
        used.add(arc)
        entries.append((path, arc, False))
    return entries


def _archive_stem(name: str, fmt: str) -> str:
    low = name.lower()
    for ext in (
        *sorted(ALIASES, key=len, reverse=True),
        fmt,
        "tar.gz",
        "tar.bz2",
        "tar.xz",
        "tar",
        "zip",
        "7z",
        "rar",
        "gz",
        "bz2",
        "xz",
    ):
        if low.endswith("." + ext):
            return name[: -len(ext) - 1] or "archive"
    return os.path.splitext(name)[0] or "archive"


def _safe_stem(stem: str) -> str:
    # The output name is ours: never a path, never empty, never hidden.
    stem = "".join(c if c.isprintable() and c not in "/\\:" else "_" for c in stem)
    return stem.lstrip(".")[:120] or "archive"

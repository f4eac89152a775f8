"""Fonts the renderers see: the system's (Debian packages) and a deployment's own folder.

LibreOffice, pandoc's PDFs (which LibreOffice renders) and SVG rendering all take their
fonts from here. System fonts live under /usr/share/fonts, found through fontconfig's
/etc/fonts and its cache in /var/cache/fontconfig; the jails show those read-only and
nothing else beside them. A deployment adds fonts with CONVERTD_FONTS_DIR (one folder, or
several separated by ':'): the jails show each read-only at its own path, fontconfig
learns of them through a small configuration file that includes the system's
(FONTCONFIG_FILE), and resvg is handed them directly.

`coverage` answers `convertd doctor`: which writing systems have a font, and whether the
metric-compatible stand-ins for the Microsoft core fonts are installed (without them a
Calibri document is laid out with other widths: more pages, other line breaks).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape

FONTS_ENV = "CONVERTD_FONTS_DIR"
FONTCONFIG_CACHE = Path("/var/cache/fontconfig")
CONF_NAME = "convertd-fonts.conf"


def configured() -> str:
    return os.environ.get(FONTS_ENV, "").strip()


def environment() -> dict[str, str]:
    """What a process that starts converters must pass on for them to find the fonts."""
    value = configured()
    return {FONTS_ENV: value} if value else {}


def extra_dirs() -> list[Path]:
    """The deployment's font folders that exist (absolute, symlinks resolved)."""
    found: list[Path] = []
    for part in configured().split(os.pathsep):
        if part.strip():
            path = Path(part.strip()).expanduser().resolve()
            if path.is_dir() and path not in found:
                found.append(path)
    return found


def missing_dirs() -> list[str]:
    """Folders named in CONVERTD_FONTS_DIR that are not there (for doctor)."""
    return [p.strip() for p in configured().split(os.pathsep) if p.strip() and not Path(p.strip()).is_dir()]


def read_only_paths() -> list[Path]:
    """What a jail binds read-only besides /usr and /etc/fonts: fontconfig's cache (else
    every job scans every font file again) and the deployment's folders."""
    return ([FONTCONFIG_CACHE] if FONTCONFIG_CACHE.is_dir() else []) + extra_dirs()


def fontconfig_conf(dirs: list[Path]) -> str:
    lines = [
        '<?xml version="1.0"?>',
        '<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">',
        "<fontconfig>",
        '  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>',
        *(f"  <dir>{escape(str(d))}</dir>" for d in dirs),
        "</fontconfig>",
    ]
    return "\n".join(lines) + "\n"


def fontconfig_env(folder: Path, *, inside: Path | None = None) -> dict[str, str]:
    """With deployment fonts, write the fontconfig file into `folder` and return the
    variable that points at it (`inside`: the folder's path as the tool sees it)."""
    dirs = extra_dirs()
    if not dirs:
        return {}
    (folder / CONF_NAME).write_text(fontconfig_conf(dirs), encoding="utf-8")
    return {"FONTCONFIG_FILE": str((inside or folder) / CONF_NAME)}


# ------------------------------------------------------------------------ doctor


@dataclasses.dataclass(frozen=True)
class Script:
    name: str
    lang: str  # fontconfig's language tag: a font covers it when it has its characters
    package: str  # the Debian package that brings a font for it


SCRIPTS: tuple[Script, ...] = (
    Script("Latin", "en", "fonts-dejavu-core"),
    Script("Greek", "el", "fonts-dejavu-core"),
    Script("Cyrillic", "ru", "fonts-dejavu-core"),
    Script("Arabic", "ar", "fonts-noto-core"),
    Script("Hebrew", "he", "fonts-noto-core"),
    Script("Devanagari (Hindi, Marathi, Nepali)", "hi", "fonts-noto-core"),
    Script("Bengali", "bn", "fonts-noto-core"),
    Script("Tamil", "ta", "fonts-noto-core"),
    Script("Thai", "th", "fonts-noto-core"),
    Script("Armenian", "hy", "fonts-noto-core"),
    Script("Georgian", "ka", "fonts-noto-core"),
    Script("Ethiopic", "am", "fonts-noto-core"),
    Script("Chinese (simplified)", "zh-cn", "fonts-noto-cjk"),
    Script("Chinese (traditional)", "zh-tw", "fonts-noto-cjk"),
    Script("Japanese", "ja", "fonts-noto-cjk"),
    Script("Korean", "ko", "fonts-noto-cjk"),
    Script("Emoji", "und-zsye", "fonts-noto-color-emoji"),
)

# Microsoft core font -> the metric-compatible family that takes its place
METRIC_COMPATIBLE: tuple[tuple[str, str, str], ...] = (
    ("Calibri", "Carlito", "fonts-crosextra-carlito"),
    ("Cambria", "Caladea", "fonts-crosextra-caladea"),
    ("Arial", "Liberation Sans", "fonts-liberation2"),
    ("Times New Roman", "Liberation Serif", "fonts-liberation2"),
    ("Courier New", "Liberation Mono", "fonts-liberation2"),
)


@dataclasses.dataclass(frozen=True)
class Coverage:
    scripts: dict[str, list[str]]  # script -> the families that cover it
    metric: dict[str, str | None]  # Microsoft font -> its stand-in when installed
    missing_packages: list[str]
    error: str | None = None  # why nothing could be asked (no fontconfig)


def coverage(config: Path | None = None) -> Coverage:
    """Ask fontconfig what is covered: the system's fonts and the deployment's folders, or
    what the fontconfig file `config` describes."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return Coverage({}, {}, [], "fontconfig's fc-list is not installed (Debian package fontconfig)")
    with tempfile.TemporaryDirectory(prefix="convertd-fonts-") as tmp:
        chosen = {"FONTCONFIG_FILE": str(config)} if config else fontconfig_env(Path(tmp))
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, **chosen}

        def families(pattern: str) -> list[str]:
            out = subprocess.run(
                [fc_list, pattern, "family"], capture_output=True, text=True, env=env, timeout=60, check=False
            ).stdout
            return sorted({line.split(",")[0].strip() for line in out.splitlines() if line.strip()})

        scripts = {s.name: families(f":lang={s.lang}") for s in SCRIPTS}
        metric = {ms: (sub if families(f":family={sub}") else None) for ms, sub, _ in METRIC_COMPATIBLE}
    missing = [s.package for s in SCRIPTS if not scripts[s.name]]
    missing += [pkg for ms, _, pkg in METRIC_COMPATIBLE if metric[ms] is None]
    return Coverage(scripts, metric, sorted(set(missing)))

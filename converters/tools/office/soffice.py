"""Run LibreOffice headless on one file, with a private, locked-down profile per job.

Two conversions sharing a LibreOffice profile at once make one of them fail silently, so
every call gets its own profile inside the job's working directory. Three layers keep a
hostile document from reaching outside itself:

1. the profile is seeded with settings that forbid macros, link and field updates, and
   send HTTP(S) to a closed local port (`--convert-to` itself never runs document macros);
2. `links.guard_links` strips links to outside files from ODF, OOXML and RTF input before
   LibreOffice sees it (LibreOffice 7.4 still loads a linked image of an ODF drawing or
   an RTF INCLUDEPICTURE field from any local path, whatever the settings say);
3. `process.run_isolated` runs LibreOffice in its own user, mount, PID and network namespaces where
   only /usr, a few files of /etc and the job's own folder exist, and no network does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from converters.base import ConversionError
from converters.tools import fonts
from converters.tools.office import door as office_door
from converters.tools.process import isolation_missing_but_required, run_isolated

# Import filters by our format names. Forcing the import filter (--infilter) keeps
# LibreOffice from guessing another type for a file (an "xlsx" that is really HTML would
# otherwise be opened by the HTML importer, which fetches images).
IMPORT_FILTERS: dict[str, str] = {
    "docx": "MS Word 2007 XML",
    "doc": "MS Word 97",
    "odt": "writer8",
    "rtf": "Rich Text Format",
    "txt": "Text (encoded):UTF8,LF,,,",
    "xlsx": "Calc MS Excel 2007 XML",
    "xls": "MS Excel 97",
    "ods": "calc8",
    "pptx": "Impress MS PowerPoint 2007 XML",
    "ppt": "MS PowerPoint 97",
    "odp": "impress8",
}

APP_OF: dict[str, str] = {
    "docx": "writer", "doc": "writer", "odt": "writer", "rtf": "writer", "txt": "writer",
    "xlsx": "calc", "xls": "calc", "ods": "calc",
    "pptx": "impress", "ppt": "impress", "odp": "impress",
}  # fmt: skip

# Export filter (with its default options after ':') per application and output format.
EXPORT_FILTERS: dict[str, dict[str, str]] = {
    "writer": {
        "pdf": "writer_pdf_Export",
        "docx": "MS Word 2007 XML",
        "doc": "MS Word 97",
        "odt": "writer8",
        "rtf": "Rich Text Format",
        "txt": "Text (encoded):UTF8,LF,,,",
        "html": "HTML (StarWriter):EmbedImages",
    },
    "calc": {
        "pdf": "calc_pdf_Export",
        "xlsx": "Calc MS Excel 2007 XML",
        "xls": "MS Excel 97",
        "ods": "calc8",
        "csv": "Text - txt - csv (StarCalc)",
        "html": "HTML (StarCalc)",
    },
    "impress": {
        "pdf": "impress_pdf_Export",
        "pptx": "Impress MS PowerPoint 2007 XML",
        "ppt": "MS PowerPoint 97",
        "odp": "impress8",
    },
}

# Measured on Debian 12 / LibreOffice 7.4.7: soffice.bin peaks near 0.6 GB of address
# space converting small files and segfaults under an RLIMIT_AS of 0.4 GB. 3 GB leaves
# room for large spreadsheets and image-heavy presentations.
MEMORY_BYTES = 3 * 1024**3

# Registry settings written into every fresh profile: (path, property, value).
SAFE_SETTINGS: tuple[tuple[str, str, str], ...] = (
    # 3 = "very high": only signed macros from trusted locations, and none are trusted
    ("/org.openoffice.Office.Common/Security/Scripting", "MacroSecurityLevel", "3"),
    ("/org.openoffice.Office.Common/Security/Scripting", "DisableMacrosExecution", "true"),
    ("/org.openoffice.Office.Common/Security/Scripting", "OfficeBasic", "0"),  # never
    ("/org.openoffice.Office.Common/Security/Scripting", "BlockUntrustedRefererLinks", "true"),
    # Writer: 0 = never update links; fields (INCLUDETEXT, ...) keep their stored result
    ("/org.openoffice.Office.Writer/Content/Update", "Link", "0"),
    ("/org.openoffice.Office.Writer/Content/Update", "Field", "false"),
    # Calc: 1 = never update external references; never recalculate on load (a formula
    # like WEBSERVICE() would otherwise run)
    ("/org.openoffice.Office.Calc/Content/Update", "Link", "1"),
    ("/org.openoffice.Office.Calc/Formula/Load", "OOXMLRecalcMode", "1"),
    ("/org.openoffice.Office.Calc/Formula/Load", "ODFRecalcMode", "1"),
    # anything that still tries the network meets a manual proxy on a closed port
    ("/org.openoffice.Inet/Settings", "ooInetProxyType", "2"),
    ("/org.openoffice.Inet/Settings", "ooInetHTTPProxyName", "127.0.0.1"),
    ("/org.openoffice.Inet/Settings", "ooInetHTTPProxyPort", "9"),
    ("/org.openoffice.Inet/Settings", "ooInetHTTPSProxyName", "127.0.0.1"),
    ("/org.openoffice.Inet/Settings", "ooInetHTTPSProxyPort", "9"),
    ("/org.openoffice.Inet/Settings", "ooInetFTPProxyName", "127.0.0.1"),
    ("/org.openoffice.Inet/Settings", "ooInetFTPProxyPort", "9"),
    ("/org.openoffice.Office.Common/Misc", "FirstRun", "false"),
    ("/org.openoffice.Office.Common/Misc", "CrashReport", "false"),
    ("/org.openoffice.Office.Java/VirtualMachine", "Enable", "false"),
)

TIMEOUT_SECONDS = 300


def soffice_path() -> str | None:
    return shutil.which("soffice") or shutil.which("libreoffice")


def unavailable() -> str | None:
    if soffice_path() is None:
        return (
            "LibreOffice is not installed (no soffice on PATH): install the Debian packages "
            "libreoffice-writer-nogui, libreoffice-calc-nogui, libreoffice-impress-nogui"
        )
    return isolation_missing_but_required()


def profile_xcu(settings: tuple[tuple[str, str, str], ...] = SAFE_SETTINGS) -> str:
    items = "\n".join(
        f'<item oor:path={quoteattr(path)}><prop oor:name={quoteattr(name)} oor:op="fuse">'
        f"<value>{escape(value)}</value></prop></item>"
        for path, name, value in settings
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<oor:items xmlns:oor="http://openoffice.org/2001/registry" '
        'xmlns:xs="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        f"{items}\n</oor:items>\n"
    )


def write_profile(root: Path, xcu: str | None = None) -> str:
    """Create a fresh profile under root; return it as the file URL soffice expects."""
    user = root / "user"
    user.mkdir(parents=True, exist_ok=True)
    (user / "registrymodifications.xcu").write_text(xcu or profile_xcu(), encoding="utf-8")
    return root.resolve().as_uri()


def pdf_filter_options(page_range: str = "", pdf_a: bool = False) -> str:
    """JSON options of the *_pdf_Export filters (LibreOffice 7.4 reads JSON here)."""
    opts: dict[str, dict[str, str]] = {}
    if page_range:
        opts["PageRange"] = {"type": "string", "value": page_range}
    if pdf_a:
        opts["SelectPdfVersion"] = {"type": "long", "value": "2"}  # PDF/A-2b
    return json.dumps(opts, separators=(",", ":")) if opts else ""


def csv_filter_options(delimiter: str, sheet: int) -> str:
    """Positional options of the CSV export filter.

    Separator, text quote ("), charset 76 = UTF-8, first line 1, column formats (none),
    language, quote all text cells, detect special numbers, save cell contents as shown,
    export formulas, remove spaces, then the 1-based sheet to export.
    """
    return f"{ord(delimiter)},34,76,1,,0,false,true,true,false,false,{sheet}"


def convert(
    src: Path,
    input_format: str,
    output_format: str,
    workdir: Path,
    *,
    filter_options: str = "",
    timeout: float = TIMEOUT_SECONDS,
) -> Path:
    """Convert src (already passed through guard_links) to output_format; return the output path.

    When the worker opened a door to its warm pool in workdir (converters/tools/office/broker.py),
    the pool converts; otherwise (no pool in this process: tools, some tests) a cold soffice
    runs here, isolated by `run_isolated`.
    """
    soffice = soffice_path()
    if soffice is None:
        raise ConversionError("LibreOffice is not installed on this server.", unavailable())
    app = APP_OF[input_format]
    export = EXPORT_FILTERS[app].get(output_format)
    if export is None:
        raise ConversionError(f"LibreOffice cannot write {output_format} from {input_format}.")
    door = office_door.find(workdir)
    if door is not None:
        # the worker runs a warm pool: its instance converts, in its own jail (a file name
        # of our own, created by door.convert with O_EXCL; no folder: making and removing
        # one costs milliseconds on some disks)
        n = 0
        while (final := workdir / f"lo-run-{n}.{output_format}").exists():
            n += 1
        office_door.convert(door, src, input_format, output_format, filter_options, final)
        return final
    if filter_options:
        target = f"{output_format}:{export.split(':')[0]}:{filter_options}"
    else:
        target = f"{output_format}:{export}"
    return _convert_cold(soffice, src, input_format, output_format, target, workdir, timeout)


def _convert_cold(
    soffice: str, src: Path, input_format: str, output_format: str, target: str, workdir: Path, timeout: float
) -> Path:
    """One headless soffice run with a fresh profile, isolated by `run_isolated`.

    src is linked under a fixed name so the output name is predictable and no name chosen
    by the uploader reaches the command line.
    """
    run_dir = fresh_dir(workdir / "lo-run")
    in_dir, out_dir, tmp_dir = run_dir / "in", run_dir / "out", run_dir / "tmp"
    for d in (in_dir, out_dir, tmp_dir):
        d.mkdir()
    staged = in_dir / f"document.{input_format}"
    stage(src, staged)
    profile = write_profile(run_dir / "profile")
    cmd = [
        soffice,
        f"-env:UserInstallation={profile}",
        "--headless",
        "--invisible",
        "--nologo",
        "--norestore",
        "--nodefault",
        "--nolockcheck",
        f"--infilter={IMPORT_FILTERS[input_format]}",
        "--convert-to",
        target,
        "--outdir",
        str(out_dir),
        str(staged),
    ]
    env = _env(run_dir, tmp_dir) | fonts.fontconfig_env(run_dir)  # a deployment's own fonts
    proc = run_isolated(
        cmd, share=run_dir, env=env, timeout=timeout, what="LibreOffice", read_only=fonts.read_only_paths()
    )
    out = _find_output(out_dir, output_format)
    if out is None:
        detail = _last_line(proc.stdout + proc.stderr)
        crashed = proc.returncode < 0 or proc.returncode > 128
        raise ConversionError(
            f"LibreOffice could not convert this {input_format} file to {output_format}.",
            hint=(
                ("LibreOffice crashed or ran out of memory. " if crashed else "")
                + f"The file may be damaged, password-protected or not really {input_format}."
                + (f" LibreOffice said: {detail}" if detail else "")
            ),
        )
    # keep the output, drop the profile and the staged input
    final = run_dir.with_name(f"{run_dir.name}.{output_format}")
    out.replace(final)
    shutil.rmtree(run_dir, ignore_errors=True)
    return final


def _find_output(out_dir: Path, output_format: str) -> Path | None:
    # the CSV export of one chosen sheet appends the sheet name: document-Sheet1.csv
    found = sorted(p for p in out_dir.glob(f"*.{output_format}") if p.is_file())
    if not found or (found[0].stat().st_size == 0 and output_format != "csv"):
        return None
    return found[0]


def deliver(out: Path, workdir: Path, stem: str) -> Path:
    """Move a finished output to workdir/<stem>.<ext>, the name the user will download."""
    stem = re.sub(r"[^\w .-]+", "_", stem).strip(" .") or "document"
    dest = workdir / f"{stem}{out.suffix}"
    if dest.exists():
        dest = workdir / f"{stem}-converted{out.suffix}"
    out.replace(dest)
    return dest


def fresh_dir(base: Path) -> Path:
    n = 0
    while True:
        path = base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir(parents=True)
            return path.resolve()
        except FileExistsError:
            n += 1


def stage(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _env(run_dir: Path, tmp_dir: Path) -> dict[str, str]:
    # a minimal environment: nothing of the worker's (database URLs, keys) reaches the tool
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(run_dir),  # LibreOffice and fontconfig write caches under $HOME
        "TMPDIR": str(tmp_dir),
        "SAL_USE_VCLPLUGIN": "svp",  # headless rendering, no X server
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "ftp_proxy": "http://127.0.0.1:9",
    }
    return env


def _last_line(text: str) -> str:
    lines = [
        ln.strip()
        for ln in text.splitlines()
        if ln.strip() and "javaldx" not in ln and not ln.startswith("convert ")
    ]
    return lines[-1][:300] if lines else ""

"""Run LibreOffice headless on one file, with a private, locked-down profile per job.

Two conversions sharing a LibreOffice profile at once make one of them fail silently, so
every call gets its own profile inside the job's working directory. Three layers keep a
hostile document from reaching outside itself:

1. the profile is seeded with settings that forbid macros, link and field updates, and
   send HTTP(S) to a closed local port (`--convert-to` itself never runs document macros);
2. `guard_links` strips links to outside files from ODF, OOXML and RTF input before
   LibreOffice sees it (LibreOffice 7.4 still loads a linked image of an ODF drawing or
   an RTF INCLUDEPICTURE field from any local path, whatever the settings say);
3. `run_isolated` runs LibreOffice in its own user, mount, PID and network namespaces where
   only /usr, a few files of /etc and the job's own folder exist, and no network does.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import xml.sax
import xml.sax.handler
import xml.sax.xmlreader
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from defusedxml.common import DefusedXmlException
from defusedxml.expatreader import DefusedExpatParser

from converters import fonts, office_door
from converters.base import ConversionError

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

    When the worker opened a door to its warm pool in workdir (converters/office_broker.py),
    the pool converts; otherwise (no pool in this process: tools, some tests) a cold soffice
    runs here, isolated by `run_isolated`.

    src is linked under a fixed name so the output name is predictable and no name chosen
    by the uploader reaches the command line.

    Long for now: the pool path and the cold path share the link guards and the output
    checks; it splits with the LibreOffice tool package (issue 11, item 2).
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
        # the worker runs a warm pool: its instance converts, in its own jail
        dest = fresh_dir(workdir / "lo-run")
        final = dest.with_name(f"{dest.name}.{output_format}")
        dest.rmdir()
        office_door.convert(door, src, input_format, output_format, filter_options, final)
        return final
    if filter_options:
        target = f"{output_format}:{export.split(':')[0]}:{filter_options}"
    else:
        target = f"{output_format}:{export}"
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


# --------------------------------------------------------------------------- isolation

ISOLATION_ENV = "CONVERTD_TOOL_ISOLATION"  # auto (default) | require | off

# Runs as "root" of a fresh user namespace: builds a root file system that holds /usr, a
# few files of /etc, /dev/null & co, a private /proc and the job's folder, then chroots
# into it. The network namespace has nothing but its own loopback, and that is down.
_ISOLATE_SH = r"""
set -e
share="$1"; ro="$2"; shift 2
new="$share/.root"
mkdir -p "$new"
mount -t tmpfs -o size=8m,mode=755 none "$new"
cd "$new"
mkdir -p usr etc dev proc tmp
mount --rbind /usr usr
mount -o remount,bind,ro usr
for l in bin sbin lib lib64 lib32 libx32; do
  if [ -L "/$l" ]; then ln -s "$(readlink "/$l")" "$l"
  elif [ -d "/$l" ]; then mkdir "$l"; mount --rbind "/$l" "$l"; mount -o remount,bind,ro "$l"
  fi
done
for e in fonts libreoffice alternatives ld.so.cache localtime; do
  [ -e "/etc/$e" ] || continue
  if [ -d "/etc/$e" ]; then mkdir "etc/$e"; else : > "etc/$e"; fi
  mount --bind "/etc/$e" "etc/$e"
  mount -o remount,bind,ro "etc/$e"
done
for n in null zero urandom random; do : > "dev/$n"; mount --bind "/dev/$n" "dev/$n"; done
mount -t proc -o nosuid,nodev,noexec proc proc
IFS=:
for p in $ro; do
  if [ -d "$p" ]; then mkdir -p "./$p"; else mkdir -p "./${p%/*}"; : > "./$p"; fi
  mount --bind "$p" "./$p"
  mount -o remount,bind,ro "./$p"
done
unset IFS
mkdir -p "./$share"
mount --bind "$share" "./$share"
exec chroot . "$@"
"""


def isolation_mode() -> str:
    mode = os.environ.get(ISOLATION_ENV, "auto").strip().lower()
    return mode if mode in ("auto", "require", "off") else "auto"


@functools.cache
def isolation_available() -> bool:
    """Whether this machine lets us create user, mount, PID and network namespaces."""
    if shutil.which("unshare") is None or not Path("/usr/sbin/chroot").exists():
        return False
    with tempfile.TemporaryDirectory(prefix="convertd-iso-") as tmp:
        try:
            proc = subprocess.run(
                [*_wrapper(Path(tmp).resolve(), ()), "/usr/bin/true"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=20,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
    return proc.returncode == 0


def isolation_missing_but_required() -> str | None:
    if isolation_mode() == "require" and not isolation_available():
        return (
            f"{ISOLATION_ENV}=require but this machine does not allow unprivileged user "
            "namespaces (unshare --user --mount --net --pid): LibreOffice and pandoc would "
            "run without file-system and network isolation"
        )
    return None


def isolation_used() -> bool:
    return isolation_mode() != "off" and isolation_available()


def _wrapper(share: Path, read_only: Sequence[Path]) -> list[str]:
    return [
        shutil.which("unshare") or "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "--net",
        "--pid",
        "--ipc",
        "--uts",
        "--fork",
        "--kill-child",
        "--",
        "/bin/sh",
        "-c",
        _ISOLATE_SH,
        "sh",
        str(share),
        ":".join(str(p) for p in read_only),
    ]


def run_isolated(
    cmd: list[str],
    *,
    share: Path,
    env: Mapping[str, str],
    timeout: float,
    what: str,
    read_only: Sequence[Path] = (),
    isolate: bool | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run cmd seeing only `share` (read-write) and `read_only`, when the machine allows.

    The tool runs in its own process group and dies with us (PR_SET_PDEATHSIG), so a
    sandbox that kills the conversion also ends LibreOffice; on timeout the group is killed.
    """
    if isolate is None:
        isolate = isolation_used()
    full = [*_wrapper(share, read_only), *cmd] if isolate else cmd
    run_env = dict(env)
    if isolate:
        # mount and chroot live in sbin; the tool's own PATH applies after chroot too
        run_env["PATH"] = "/usr/sbin:/sbin:" + run_env.get("PATH", "/usr/bin:/bin")
    with subprocess.Popen(
        full,
        cwd=share,
        env=run_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
        preexec_fn=_die_with_parent,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            raise ConversionError(
                f"{what} took longer than {timeout:g} seconds and was stopped.",
                hint="The document may be very large or built to hang the converter.",
            ) from None
        finally:
            # a helper process left behind must not outlive the job
            _kill_group(proc)
    return subprocess.CompletedProcess(full, proc.returncode, stdout, stderr)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


# -------------------------------------------------------------------------- link guard

MAX_PARTS = 20_000
MAX_UNPACKED_BYTES = 2 * 1024**3
MAX_XML_PART_BYTES = 256 * 1024**2

XLINK = "http://www.w3.org/1999/xlink"
_ODF_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
_ODF_DRAW = "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0"
_ODF_SCRIPT = "urn:oasis:names:tc:opendocument:xmlns:script:1.0"
_ODF_PRESENTATION = "urn:oasis:names:tc:opendocument:xmlns:presentation:1.0"
_PKG_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
_WORDML = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"

# ODF elements whose link is only followed when a reader clicks it
_ODF_CLICK_ONLY = {
    (_ODF_TEXT, "a"),
    (_ODF_DRAW, "a"),
    (_ODF_SCRIPT, "event-listener"),
    (_ODF_PRESENTATION, "event-listener"),
}
_SAFE_HYPERLINK = re.compile(r"^\s*(https?|mailto):", re.I)
_INCLUDE_FIELD = re.compile(r"^\s*(INCLUDEPICTURE|INCLUDETEXT|INCLUDE|IMPORT|LINK|DDEAUTO|DDE)\b", re.I)
_ODF_FORMATS = {"odt", "ods", "odp"}
_ODF_SCANNED = {"content.xml", "styles.xml", "meta.xml"}
_OOXML_FORMATS = {"docx", "xlsx", "pptx"}

QName = tuple[str | None, str]  # (namespace URI, local name)
Rule = Callable[[QName, Mapping[QName, tuple[str, str]]], list[str]]


class _Unsafe(Exception):
    pass


def guard_links(src: Path, fmt: str, dest_dir: Path) -> tuple[Path, list[str]]:
    """Return a copy of src without links to outside resources, and the links removed.

    Links are removed, not followed: a linked image disappears, an INCLUDETEXT field shows
    its stored result. Hyperlinks a reader clicks stay. Returns src itself when it holds
    nothing to remove. Binary formats (doc, xls, ppt) are returned unchanged.
    """
    try:
        if fmt in _ODF_FORMATS or fmt in _OOXML_FORMATS:
            return _guard_package(src, fmt, dest_dir)
        if fmt == "rtf":
            return _guard_rtf(src, dest_dir)
    except _Unsafe as exc:
        raise ConversionError(
            f"This {fmt} file cannot be converted safely: {exc}.",
            hint="Open and save it again in an office program, then upload it again.",
        ) from None
    return src, []


def check_input(src: Path, fmt: str) -> None:
    """Cheap structural checks before any decoding: a zip package within its limits."""
    if fmt not in _ODF_FORMATS and fmt not in _OOXML_FORMATS and fmt != "epub":
        return
    try:
        with zipfile.ZipFile(src) as zin:
            _check_package(zin.infolist())
    except (zipfile.BadZipFile, OSError):
        raise ConversionError(
            f"This is not a valid {fmt} file (it is not a zip package).",
            hint=f"Check that the file really is {fmt}.",
        ) from None
    except _Unsafe as exc:
        raise ConversionError(
            f"This {fmt} file cannot be converted safely: {exc}.",
            hint="Open and save it again in an office program, then upload it again.",
        ) from None


def _guard_package(src: Path, fmt: str, dest_dir: Path) -> tuple[Path, list[str]]:
    try:
        zin = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError):
        raise ConversionError(
            f"This is not a valid {fmt} file (it is not a zip package).",
            hint=f"Check that the file really is {fmt}.",
        ) from None
    with zin:
        infos = zin.infolist()
        _check_package(infos)
        patches: dict[str, bytes] = {}
        removed: list[str] = []
        for info in infos:
            rule = _rule_for(fmt, info.filename)
            if rule is None:
                continue
            if info.file_size > MAX_XML_PART_BYTES:
                raise _Unsafe(f"its part {info.filename} declares {info.file_size} bytes")
            try:
                data = zin.read(info)
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError) as exc:
                raise _Unsafe(f"its part {info.filename} cannot be read ({exc})") from None
            patched, links = _patch_xml(data, rule, info.filename)
            if links:
                patches[info.filename] = patched
                removed += links
        if not patches:
            return src, []
        dest = _new_file(dest_dir, fmt)
        with zipfile.ZipFile(dest, "w") as zout:
            for info in infos:
                if info.filename in patches:
                    zout.writestr(info, patches[info.filename], compress_type=info.compress_type)
                    continue
                with zin.open(info) as fin, zout.open(info, "w") as fout:
                    shutil.copyfileobj(fin, fout, 1024 * 1024)
    return dest, removed


def _new_file(dest_dir: Path, fmt: str) -> Path:
    # a name of its own: the input itself may sit in dest_dir under any name
    fd, name = tempfile.mkstemp(prefix="guarded-", suffix=f".{fmt}", dir=dest_dir)
    os.close(fd)
    return Path(name)


def _check_package(infos: list[zipfile.ZipInfo]) -> None:
    if len(infos) > MAX_PARTS:
        raise _Unsafe(f"it holds {len(infos)} parts, over the limit of {MAX_PARTS}")
    total = sum(i.file_size for i in infos)
    if total > MAX_UNPACKED_BYTES:
        raise _Unsafe(
            f"it declares {total / 1024**3:.1f} GB unpacked, over the "
            f"{MAX_UNPACKED_BYTES / 1024**3:.0f} GB limit"
        )
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        # two parts of one name: we would check one and LibreOffice might read the other
        raise _Unsafe("it holds two parts with the same name")


def _rule_for(fmt: str, name: str) -> Rule | None:
    if fmt in _ODF_FORMATS:
        # content, styles and meta (template link) of the document and of embedded
        # objects; macro libraries and dialogs are never rendered
        return _odf_rule if name.rpartition("/")[2] in _ODF_SCANNED else None
    if name.endswith(".rels"):
        return _rels_rule
    if fmt == "docx" and name.startswith("word/") and name.endswith(".xml"):
        return _wordml_rule
    return None


def _is_outside(value: str) -> bool:
    """Whether an ODF href leaves the package (URL, absolute path, ../ out of the root)."""
    from urllib.parse import unquote

    target = unquote(value).strip().replace("\\", "/")
    if not target or target.startswith("#"):
        return False
    scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*):", target)
    if scheme:
        return scheme.group(1).lower() != "vnd.sun.star.package"
    if target.startswith("/"):
        return True
    depth = 0
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _odf_rule(element: QName, attrs: Mapping[QName, tuple[str, str]]) -> list[str]:
    href = attrs.get((XLINK, "href"))
    if href is None or element in _ODF_CLICK_ONLY or not _is_outside(href[1]):
        return []
    return [href[0]]


def _rels_rule(element: QName, attrs: Mapping[QName, tuple[str, str]]) -> list[str]:
    if element != (_PKG_RELS, "Relationship"):
        return []
    mode = attrs.get((None, "TargetMode"), ("", ""))[1]
    target = attrs.get((None, "Target"))
    if target is None or mode.strip().lower() != "external":
        return []
    rel_type = attrs.get((None, "Type"), ("", ""))[1]
    # LibreOffice looks relationships up by id whatever their type, so a "hyperlink"
    # could be used as an image source: keep only web and mail hyperlinks
    if rel_type.endswith("/hyperlink") and _SAFE_HYPERLINK.match(target[1]):
        return []
    return [target[0]]


def _wordml_rule(element: QName, attrs: Mapping[QName, tuple[str, str]]) -> list[str]:
    instr = attrs.get((_WORDML, "instr"))
    if element == (_WORDML, "fldSimple") and instr and _INCLUDE_FIELD.match(instr[1]):
        return [instr[0]]
    return []


# the name each rule needs to see before it picks anything
_RULE_NAMES: dict[Rule, bytes] = {_odf_rule: b"href", _rels_rule: b"TargetMode", _wordml_rule: b"fldSimple"}


class _Scanner(DefusedExpatParser):
    """defusedxml's SAX parser (no entities, no external references) that also refuses a
    DTD internal subset, whose attribute defaults would not show in the bytes we edit."""

    def __init__(self, part: str) -> None:
        super().__init__()
        self.part = part

    _parser: Any  # expatreader's pyexpat parser, set by reset() (not in the stubs)

    def reset(self) -> None:
        super().reset()
        self._parser.StartDoctypeDeclHandler = self._doctype

    def _doctype(self, name: str, sysid: str | None, pubid: str | None, internal: int) -> None:
        if internal:
            raise _Unsafe(f"its part {self.part} declares its own DTD")

    def byte_index(self) -> int:
        return int(self._parser.CurrentByteIndex)


class _Finder(xml.sax.handler.ContentHandler):
    """Collects (byte offset, attribute qname, value) of the attributes a rule picks."""

    def __init__(self, scanner: _Scanner, rule: Rule) -> None:
        super().__init__()
        self.scanner = scanner
        self.rule = rule
        self.scopes: list[dict[str, str]] = [{"xml": "http://www.w3.org/XML/1998/namespace"}]
        self.hits: list[tuple[int, str, str]] = []

    def startElement(self, name: str, attrs: xml.sax.xmlreader.AttributesImpl) -> None:
        scope = dict(self.scopes[-1])
        plain: dict[str, str] = {}
        for key in attrs.getNames():
            if key == "xmlns":
                scope[""] = attrs[key]
            elif key.startswith("xmlns:"):
                scope[key[6:]] = attrs[key]
            else:
                plain[key] = attrs[key]
        self.scopes.append(scope)

        def resolve(qname: str, is_element: bool) -> QName:
            prefix, _, local = qname.rpartition(":")
            if not prefix:
                return (scope.get("") if is_element else None, local)
            return (scope.get(prefix, f"undeclared:{prefix}"), local)

        resolved = {resolve(k, False): (k, v) for k, v in plain.items()}
        for qname in self.rule(resolve(name, True), resolved):
            self.hits.append((self.scanner.byte_index(), qname, plain[qname]))

    def endElement(self, name: str) -> None:
        self.scopes.pop()


def _cannot_match(data: bytes, rule: Rule) -> bool:
    """Whether the part's bytes show that `rule` has nothing to pick (then it is not parsed:
    a one-page DOCX spends ~10 ms in the parser otherwise, on every job).

    Each rule picks nothing unless a name it looks for is written in the part, as names
    are: literally, never as character references. That holds only in an encoding where
    ASCII is itself (no NUL bytes, no UTF-16/32 byte-order mark, no other encoding declared)
    and without a DTD, whose attribute defaults and entities would not show in the bytes;
    anything else is parsed, and refused there if it declares entities.
    """
    needle = _RULE_NAMES.get(rule)
    return (
        needle is not None
        and needle not in data
        and b"\x00" not in data
        and b"<!DOCTYPE" not in data
        and not data.startswith((b"\xff\xfe", b"\xfe\xff"))
        and not _OTHER_ENCODING.match(data, 0, 200)
    )


_OTHER_ENCODING = re.compile(rb"\s*<\?xml[^>]*encoding\s*=\s*[\"'](?!utf-?8[\"'])", re.I)


def _patch_xml(data: bytes, rule: Rule, part: str) -> tuple[bytes, list[str]]:
    """Empty the attributes `rule` picks; return the new bytes and the removed values.

    defusedxml parses the part only to find the attributes; the bytes are then edited in
    place, so the rest of the part stays exactly as it was (re-serialising would drop the
    namespace declarations that only attribute values such as formulas use).
    """
    if _cannot_match(data, rule):
        return data, []
    scanner = _Scanner(part)
    finder = _Finder(scanner, rule)
    scanner.setContentHandler(finder)
    try:
        scanner.parse(io.BytesIO(data))
    except DefusedXmlException:
        raise _Unsafe(f"its part {part} declares XML entities or external references") from None
    except xml.sax.SAXParseException as exc:
        raise _Unsafe(f"its part {part} is not well-formed XML ({exc}); is it encrypted?") from None
    hits = finder.hits
    if not hits:
        return data, []
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or re.match(
        rb"<\?xml[^>]*encoding\s*=\s*[\"'](?!utf-?8)", data[:200], re.I
    ):
        raise _Unsafe(f"its part {part} links to outside files and is not UTF-8")
    out = bytearray(data)
    for offset, qname, _value in sorted(hits, reverse=True):
        tag_end = data.find(b"<", offset + 1)  # '<' cannot occur inside an attribute value
        pattern = re.compile(rb"\s" + re.escape(qname.encode()) + rb"\s*=\s*(\"[^\"]*\"|'[^']*')")
        match = pattern.search(data, offset, tag_end if tag_end > 0 else len(data))
        if match is None:
            raise _Unsafe(f"its part {part} links to outside files in an unusual way")
        start_at, end_at = match.span(1)
        out[start_at + 1 : end_at - 1] = b""
    return bytes(out), [value for _o, _q, value in hits]


# RTF: fields whose instruction includes outside content, and linked shape pictures
_RTF_FLDINST = re.compile(rb"\\fldinst(?![a-zA-Z])")
_RTF_SHAPE_NAME = re.compile(rb"\\sn(?![a-zA-Z])")
_RTF_LINKED_OBJECT = re.compile(rb"\\obj(?:aut)?link(?![a-zA-Z])")
_RTF_LINKED_SHAPE_PROPS = {"pibname", "fillblipname"}


def _guard_rtf(src: Path, dest_dir: Path) -> tuple[Path, list[str]]:
    data = src.read_bytes()
    edits: list[tuple[int, int, bytes]] = []
    removed: list[str] = []
    for match in _RTF_FLDINST.finditer(data):
        start, end = _rtf_group(data, match.start())
        text = _rtf_text(data[match.end() : end])
        if _INCLUDE_FIELD.match(text):
            edits.append((start, end, rb"{\*\fldinst }"))
            removed.append(text.strip()[:200])
    for match in _RTF_SHAPE_NAME.finditer(data):
        start, end = _rtf_group(data, match.start())
        if _rtf_text(data[match.end() : end]).strip().lower() in _RTF_LINKED_SHAPE_PROPS:
            edits.append((start, end, rb"{\sn convertdRemovedLink}"))
            removed.append("linked shape picture")
    for match in _RTF_LINKED_OBJECT.finditer(data):
        edits.append((match.start(), match.end(), rb"\objemb"))
        removed.append("linked object")
    if not edits:
        return src, []
    out = bytearray(data)
    last = len(data) + 1
    for start, end, repl in sorted(edits, reverse=True):
        if end > last:  # nested in an edit already made
            continue
        out[start:end] = repl
        last = start
    dest = _new_file(dest_dir, "rtf")
    dest.write_bytes(bytes(out))
    return dest, removed


def _rtf_group(data: bytes, pos: int) -> tuple[int, int]:
    """Bounds [start, end) of the {...} group around pos."""
    depth = 0
    start = pos
    i = pos - 1
    while i >= 0:
        c = data[i]
        if c in b"{}" and not _escaped(data, i):
            if c == ord("}"):
                depth += 1
            elif depth == 0:
                start = i
                break
            else:
                depth -= 1
        i -= 1
    depth = 0
    i = pos
    while i < len(data):
        c = data[i]
        if c == ord("\\"):
            i += 2
            continue
        if c == ord("{"):
            depth += 1
        elif c == ord("}"):
            if depth == 0:
                return start, i + 1
            depth -= 1
        i += 1
    return start, len(data)


def _escaped(data: bytes, i: int) -> bool:
    n = 0
    while i - 1 - n >= 0 and data[i - 1 - n] == ord("\\"):
        n += 1
    return n % 2 == 1


def _rtf_text(chunk: bytes) -> str:
    """The text of an RTF fragment as a reader sees it: escapes decoded, controls dropped."""
    out = io.StringIO()
    i = 0
    while i < len(chunk):
        c = chunk[i]
        if c == ord("\\"):
            m = re.match(rb"\\'([0-9a-fA-F]{2})", chunk[i:])
            if m:
                out.write(chr(int(m.group(1), 16)))
                i += m.end()
                continue
            m = re.match(rb"\\u(-?\d+) ?(\\'[0-9a-fA-F]{2}|[^\\{}])?", chunk[i:])
            if m:
                out.write(chr(int(m.group(1)) % 65536))
                i += m.end()
                continue
            m = re.match(rb"\\[a-zA-Z]+-?\d* ?", chunk[i:])
            if m:
                i += m.end()
                continue
            if i + 1 < len(chunk) and chunk[i + 1] in b"\\{}":
                out.write(chr(chunk[i + 1]))
            i += 2
            continue
        if c not in b"{}\r\n":
            out.write(chr(c))
        i += 1
    return out.getvalue()

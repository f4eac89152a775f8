"""The link guard: office files lose their links to outside resources before LibreOffice reads them.

LibreOffice 7.4 still loads a linked image of an ODF drawing or an RTF INCLUDEPICTURE field
from any local path, whatever the profile's settings say, so `guard_links` strips links to
outside files from ODF, OOXML and RTF input (hyperlinks a reader clicks stay), and
`check_input` refuses zip packages beyond our limits before anything decodes them.

This module is the guard's front door and its zip-package side; what counts as a link lives in
link_rules.py, the in-place XML edit in xml_patch.py, the RTF side in rtf_links.py.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from converters.base import ConversionError
from converters.tools.office import rtf_links
from converters.tools.office.link_rules import ODF_FORMATS, OOXML_FORMATS, Unsafe, rule_for
from converters.tools.office.xml_patch import patch_xml

MAX_PARTS = 20_000
MAX_UNPACKED_BYTES = 2 * 1024**3
MAX_XML_PART_BYTES = 256 * 1024**2


def guard_links(src: Path, fmt: str, dest_dir: Path) -> tuple[Path, list[str]]:
    """Return a copy of src without links to outside resources, and the links removed.

    Links are removed, not followed: a linked image disappears, an INCLUDETEXT field shows
    its stored result. Hyperlinks a reader clicks stay. Returns src itself when it holds
    nothing to remove. Binary formats (doc, xls, ppt) are returned unchanged.
    """
    try:
        if fmt in ODF_FORMATS or fmt in OOXML_FORMATS:
            return _guard_package(src, fmt, dest_dir)
        if fmt == "rtf":
            return _guard_rtf(src, dest_dir)
    except Unsafe as exc:
        raise ConversionError(
            f"This {fmt} file cannot be converted safely: {exc}.",
            hint="Open and save it again in an office program, then upload it again.",
        ) from None
    return src, []


def check_input(src: Path, fmt: str) -> None:
    """Cheap structural checks before any decoding: a zip package within its limits."""
    if fmt not in ODF_FORMATS and fmt not in OOXML_FORMATS and fmt != "epub":
        return
    try:
        with zipfile.ZipFile(src) as zin:
            _check_package(zin.infolist())
    except (zipfile.BadZipFile, OSError):
        raise ConversionError(
            f"This is not a valid {fmt} file (it is not a zip package).",
            hint=f"Check that the file really is {fmt}.",
        ) from None
    except Unsafe as exc:
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
            rule = rule_for(fmt, info.filename)
            if rule is None:
                continue
            if info.file_size > MAX_XML_PART_BYTES:
                raise Unsafe(f"its part {info.filename} declares {info.file_size} bytes")
            try:
                data = zin.read(info)
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError) as exc:
                raise Unsafe(f"its part {info.filename} cannot be read ({exc})") from None
            patched, links = patch_xml(data, rule, info.filename)
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
        raise Unsafe(f"it holds {len(infos)} parts, over the limit of {MAX_PARTS}")
    total = sum(i.file_size for i in infos)
    if total > MAX_UNPACKED_BYTES:
        raise Unsafe(
            f"it declares {total / 1024**3:.1f} GB unpacked, over the "
            f"{MAX_UNPACKED_BYTES / 1024**3:.0f} GB limit"
        )
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        # two parts of one name: we would check one and LibreOffice might read the other
        raise Unsafe("it holds two parts with the same name")


def _guard_rtf(src: Path, dest_dir: Path) -> tuple[Path, list[str]]:
    data, removed = rtf_links.unlink(src.read_bytes())
    if not removed:
        return src, []
    dest = _new_file(dest_dir, "rtf")
    dest.write_bytes(data)
    return dest, removed

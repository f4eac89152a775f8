"""Reading structured data into plain Python values, with the safe parsers only.

json, yaml (safe loader, alias expansion bounded), toml, xml (defusedxml) become trees;
csv, tsv and xlsx (calamine, after the sheets' declared sizes are checked) become lists of
records keyed by the header row. `READERS` maps each format to its reader.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tomllib
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as xml_fromstring
from defusedxml.ElementTree import iterparse as xml_iterparse

from converters.base import ConversionError

MAX_SHEET_CELLS = 10_000_000  # calamine holds the whole rectangle, ~32 bytes a cell
MAX_UNZIPPED = 512 * 1024**2  # all members of an xlsx together
MAX_EXPANDED = 5_000_000  # values a YAML document may expand to through its aliases
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_CELL_REF = re.compile(r"([A-Z]{1,3})(\d{1,7})")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _text(path: Path) -> str:
    data = path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        encodings: tuple[str, ...] = ("utf-16",)
    else:  # UTF-8 first; old spreadsheet exports are often Windows-1252
        encodings = ("utf-8-sig", "cp1252")
    for encoding in encodings:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def read_json(path: Path, opts: Mapping[str, Any]) -> Any:
    try:
        return json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        raise ConversionError(
            f"The JSON is malformed at line {exc.lineno}, column {exc.colno}: {exc.msg}.",
            "Fix the file (a JSON validator shows the spot) and send it again.",
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConversionError("The JSON is not valid UTF-8 text.", "Save it as UTF-8.") from exc


def read_yaml(path: Path, opts: Mapping[str, Any]) -> Any:
    try:
        docs = list(yaml.load_all(_text(path), Loader=_YAML_LOADER))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConversionError(
            f"The YAML is malformed{where}: {exc.problem or exc.context}.",
            "Fix the file and send it again.",
        ) from exc
    except yaml.YAMLError as exc:
        raise ConversionError(f"The YAML is malformed: {exc}.", "Fix the file.") from exc
    data = docs[0] if len(docs) == 1 else docs
    _check_expansion(data)
    return data


def _check_expansion(data: Any) -> None:
    """Refuse alias bombs (a few lines that expand to billions of values) and cycles."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(value: Any) -> int:
        if not isinstance(value, dict | list):
            return 1
        key = id(value)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConversionError(
                "The YAML refers to itself (a recursive alias).",
                "Data that contains itself cannot be written out; remove the cycle.",
            )
        active.add(key)
        items = value.values() if isinstance(value, dict) else value
        total = 1
        for item in items:
            total += size(item)
            if total > MAX_EXPANDED:
                raise ConversionError(
                    f"The YAML expands to more than {MAX_EXPANDED:,} values through its aliases.",
                    "This looks like an alias bomb; send the data without nested aliases.",
                )
        active.discard(key)
        sizes[key] = total
        return total

    size(data)


def read_toml(path: Path, opts: Mapping[str, Any]) -> Any:
    try:
        return tomllib.loads(_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise ConversionError(f"The TOML is malformed: {exc}.", "Fix the file.") from exc


def read_xml(path: Path, opts: Mapping[str, Any]) -> Any:
    try:
        root = xml_fromstring(path.read_bytes(), forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise ConversionError(
            "The XML declares entities or external references, which are not allowed.",
            "Remove the DOCTYPE's ENTITY declarations (they are never expanded here).",
        ) from exc
    except ET.ParseError as exc:
        line, column = exc.position
        raise ConversionError(
            f"The XML is malformed at line {line}, column {column + 1}.",
            f"The parser said: {str(exc).split(':')[0]}.",
        ) from exc
    return {_local(root.tag): _element(root)}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _element(el: ET.Element) -> Any:
    """xmltodict's shape: attributes as @name, repeated children as lists, #text."""
    children = list(el)
    text = (el.text or "").strip()
    if not children and not el.attrib:
        return text or None
    obj: dict[str, Any] = {f"@{_local(k)}": v for k, v in el.attrib.items()}
    groups: dict[str, list[Any]] = {}
    for child in children:
        groups.setdefault(_local(child.tag), []).append(_element(child))
    for key, values in groups.items():
        obj[key] = values[0] if len(values) == 1 else values
    if text:
        obj["#text"] = text
    return obj


def _infer(value: str) -> Any:
    return (
        (float(value) if any(c in value for c in ".eE") else int(value))
        if (_NUMBER.fullmatch(value))
        else value
    )


def _records(rows: Iterator[list[Any]], header: bool) -> list[Any]:
    rows = iter(rows)
    if not header:
        return list(rows)
    names = _unique([str(c) if c not in (None, "") else "" for c in next(rows, [])])
    out = []
    for row in rows:
        if len(row) > len(names):
            names += _unique([""] * (len(row) - len(names)), taken=set(names), start=len(names))
        out.append({name: (row[i] if i < len(row) else None) for i, name in enumerate(names)})
    return out


def _unique(names: list[str], taken: set[str] | None = None, start: int = 0) -> list[str]:
    """Names made unique with a suffix: a, a_2, a_3. Each name's last suffix is kept, so a
    header repeating one name a million times costs a million steps, not half a trillion."""
    taken = set() if taken is None else taken
    last: dict[str, int] = {}
    out = []
    for i, name in enumerate(names, start=start + 1):
        base = name or f"column{i}"
        name, n = base, last.get(base, 1)
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        last[base] = n
        taken.add(name)
        out.append(name)
    return out


def read_csv(path: Path, opts: Mapping[str, Any], delimiter: str | None = None) -> Any:
    text = _text(path)
    delimiter = delimiter or opts.get("delimiter") or "auto"
    if delimiter == "auto":
        try:
            delimiter = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    infer = opts.get("infer_types", True)
    try:
        rows = [[_infer(c) for c in row] if infer else row for row in reader]
    except csv.Error as exc:
        raise ConversionError(
            f"The CSV is malformed at line {reader.line_num}: {exc}.", "Fix the file."
        ) from exc
    return _records(iter(rows), opts.get("header", True))


def read_tsv(path: Path, opts: Mapping[str, Any]) -> Any:
    return read_csv(path, opts, delimiter="\t")


def check_xlsx(path: Path) -> None:
    """Refuse zip bombs and sheets that declare an enormous cell rectangle."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if sum(i.file_size for i in infos) > MAX_UNZIPPED:
                raise ConversionError(
                    f"The spreadsheet unpacks to more than {MAX_UNZIPPED // 1024**2} MiB.",
                    "Send a smaller spreadsheet, or export the sheet as CSV.",
                )
            for info in infos:
                if info.filename.startswith("xl/worksheets/") and info.filename.endswith(".xml"):
                    with zf.open(info) as fh:
                        _check_sheet(fh)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ConversionError(
            "The xlsx file is damaged (not a valid zip).",
            "Save it again from the spreadsheet program.",
        ) from exc


def _check_sheet(fh: Any) -> None:
    rows = cols = cells = 0
    try:
        for _, el in xml_iterparse(fh, events=("start",), forbid_dtd=True):
            tag = _local(el.tag)
            if tag == "c":
                cells += 1
                ref = _CELL_REF.match(el.get("r", ""))
                if ref:
                    col = 0
                    for ch in ref.group(1):
                        col = col * 26 + ord(ch) - 64
                    cols, rows = max(cols, col), max(rows, int(ref.group(2)))
            elif tag == "row" and (el.get("r") or "").isdigit():
                rows = max(rows, int(el.get("r")))
            el.clear()
    except (ET.ParseError, DefusedXmlException) as exc:
        raise ConversionError(
            "A sheet of the xlsx file is damaged or not allowed XML.",
            "Save it again from the spreadsheet program.",
        ) from exc
    span = max(rows * max(cols, 1), cells)
    if span > MAX_SHEET_CELLS:
        raise ConversionError(
            f"A sheet spans {rows:,} rows by {cols:,} columns ({span:,} cells), over the "
            f"{MAX_SHEET_CELLS:,} cell limit.",
            "Delete the far-away cells or send the data as CSV.",
        )


def read_xlsx(path: Path, opts: Mapping[str, Any]) -> Any:
    from python_calamine import CalamineError, CalamineWorkbook

    check_xlsx(path)
    wanted = (opts.get("sheet") or "").strip()
    try:
        book = CalamineWorkbook.from_path(str(path))
        names = book.sheet_names
        if not wanted:
            index = 0
        elif wanted.isdigit() and wanted not in names:
            index = int(wanted) - 1
        else:
            index = names.index(wanted) if wanted in names else -1
        if not 0 <= index < len(names):
            raise ConversionError(
                f"There is no sheet {wanted!r} in the spreadsheet.",
                f"Its sheets are: {', '.join(names)}.",
            )
        rows = book.get_sheet_by_index(index).to_python()
    except CalamineError as exc:
        raise ConversionError(
            "The xlsx file could not be read.", f"The reader said: {str(exc)[:200]}"
        ) from exc
    cleaned = ([_from_sheet(v) for v in row] for row in rows)
    return _records(cleaned, opts.get("header", True))


def _from_sheet(value: Any) -> Any:
    if value == "":
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)  # a spreadsheet stores every number as a float
    return value


READERS = {
    "json": read_json,
    "yaml": read_yaml,
    "toml": read_toml,
    "xml": read_xml,
    "csv": read_csv,
    "tsv": read_tsv,
    "xlsx": read_xlsx,
}

"""Structured data: json, yaml, toml, xml (trees) and csv, tsv, xlsx (tables).

Every input becomes plain Python data (dicts, lists, scalars); tables become a list of
records keyed by the header row. Parsers are the safe ones only: YAML's safe loader,
defusedxml for XML (entities, external DTDs and XInclude are never resolved), calamine for
xlsx after a check that the sheets do not declare more cells than we can hold (two cells,
at A1 and XFD1048576, make calamine allocate half a terabyte).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import math
import re
import tomllib
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as xml_fromstring
from defusedxml.ElementTree import iterparse as xml_iterparse

from converters.base import ConversionError, Converter, Option, Result, Task
from converters.sniff import check_declared

TREE = ("json", "yaml", "toml", "xml")
TABLE = ("csv", "tsv", "xlsx")
FORMATS = TREE + TABLE
DELIMITERS = (",", ";", "|", "\t", ":")
MAX_SHEET_CELLS = 10_000_000  # calamine holds the whole rectangle, ~32 bytes a cell
MAX_UNZIPPED = 512 * 1024**2  # all members of an xlsx together
MAX_EXPANDED = 5_000_000  # values a YAML document may expand to through its aliases
XLSX_MAX_ROWS, XLSX_MAX_COLS = 1_048_576, 16_384
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_XML_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_XML_NAME = re.compile(r"[A-Za-z_][\w.-]*")
_CELL_REF = re.compile(r"([A-Z]{1,3})(\d{1,7})")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


# --- reading -------------------------------------------------------------------------


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
    taken = set() if taken is None else taken
    out = []
    for i, name in enumerate(names, start=start + 1):
        base = name or f"column{i}"
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
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


def _check_xlsx(path: Path) -> None:
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

    _check_xlsx(path)
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


# --- writing -------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON-ready scalars: dates as ISO text, bytes as base64, NaN and infinity as null."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _deep(value: Any, leaf: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _deep(v, leaf) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_deep(v, leaf) for v in value]
    return leaf(value)


def write_json(data: Any, out: Path, opts: Mapping[str, Any]) -> None:
    indent = opts.get("indent", 2)
    text = json.dumps(
        _deep(data, _plain),
        ensure_ascii=False,
        indent=indent or None,
        separators=(",", ":") if not indent else None,
    )
    out.write_text(text + "\n", encoding="utf-8")


def write_yaml(data: Any, out: Path, opts: Mapping[str, Any]) -> None:
    def leaf(v: Any) -> Any:
        return v if isinstance(v, dt.date | dt.datetime | bytes) else _plain(v)

    with out.open("w", encoding="utf-8") as fh:
        yaml.dump(
            _deep(data, leaf),
            fh,
            Dumper=_YAML_DUMPER,
            allow_unicode=True,
            sort_keys=False,
            default_flow_style=False,
            indent=opts.get("indent", 2),
        )


def write_toml(data: Any, out: Path, opts: Mapping[str, Any]) -> None:
    import tomli_w

    def clean(v: Any, in_array: bool = False) -> Any:
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items() if x is not None}
        if isinstance(v, list | tuple):
            return [clean(x, True) for x in v]
        if v is None:
            return ""  # TOML has no null: kept as empty text inside arrays
        return v if isinstance(v, dt.date | dt.datetime | dt.time) else _plain(v)

    # TOML's top level is a table: a list goes under "items" (records under "rows")
    top = data if isinstance(data, dict) else {_table_key(data): data}
    out.write_text(tomli_w.dumps(clean(top)), encoding="utf-8")


def _table_key(data: Any) -> str:
    return "rows" if isinstance(data, list) and data and isinstance(data[0], dict) else "items"


def _xml_name(value: object) -> str:
    name = re.sub(r"[^\w.-]", "_", str(value))
    if not _XML_NAME.fullmatch(name) or name.lower().startswith("xml"):
        name = f"_{name}"
    return name


def _xml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _XML_BAD_CHARS.sub("", str(_plain(value)))


def _xml_fill(el: ET.Element, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            key = str(key)
            if key.startswith("@") and not isinstance(item, dict | list):
                el.set(_xml_name(key[1:]), _xml_text(item))
            elif key == "#text":
                el.text = _xml_text(item)
            else:
                for one in item if isinstance(item, list) else [item]:
                    _xml_fill(ET.SubElement(el, _xml_name(key)), one)
    elif isinstance(value, list):
        for item in value:
            _xml_fill(ET.SubElement(el, "item"), item)
    elif value is not None:
        el.text = _xml_text(value)


def write_xml(data: Any, out: Path, opts: Mapping[str, Any]) -> None:
    root_name = opts.get("root")
    if not root_name and isinstance(data, dict) and len(data) == 1:
        # one top-level key is the document element (what read_xml produced)
        ((root_name, data),) = data.items()
    root = ET.Element(_xml_name(root_name or "root"))
    _xml_fill(root, data)
    if opts.get("indent", 2):
        ET.indent(root, space=" " * opts.get("indent", 2))
    body = ET.tostring(root, encoding="unicode")
    out.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n', encoding="utf-8")


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= _flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def table(data: Any) -> tuple[list[str] | None, list[list[Any]]]:
    """Header and rows for a tree: its list of records, found under wrapper keys."""
    for _ in range(3):  # {"root": {"item": [...]}} from XML, {"rows": [...]} from TOML
        if isinstance(data, dict) and len(data) == 1:
            inner = next(iter(data.values()))
            if isinstance(inner, dict | list):
                data = inner
                continue
        break
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        return ["value"], [[data]]
    if data and all(isinstance(r, dict) for r in data):
        flats = [_flatten(r) for r in data]
        header = list(dict.fromkeys(k for f in flats for k in f))
        return header, [[f.get(k) for k in header] for f in flats]
    if data and all(isinstance(r, list) for r in data):
        return None, data
    return ["value"], [[r] for r in data]


def _cell(value: Any, native_dates: bool = False) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(_deep(value, _plain), ensure_ascii=False)
    if native_dates and isinstance(value, dt.date | dt.datetime | dt.time):
        return value
    return _plain(value)


def write_csv(data: Any, out: Path, opts: Mapping[str, Any], delimiter: str = "") -> None:
    header, rows = table(data)
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter or opts.get("delimiter") or ",")
        if header is not None:
            writer.writerow(header)
        for row in rows:
            writer.writerow(["" if v is None else _cell(v) for v in row])


def write_tsv(data: Any, out: Path, opts: Mapping[str, Any]) -> None:
    write_csv(data, out, opts, delimiter="\t")


def write_xlsx(data: Any, out: Path, opts: Mapping[str, Any]) -> None:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    header, rows = table(data)
    width = max([len(header or [])] + [len(r) for r in rows[:100_000]])
    if len(rows) + (header is not None) > XLSX_MAX_ROWS or width > XLSX_MAX_COLS:
        raise ConversionError(
            f"The data has {len(rows):,} rows and {width:,} columns; a spreadsheet holds at "
            f"most {XLSX_MAX_ROWS:,} rows and {XLSX_MAX_COLS:,} columns.",
            "Convert it to CSV instead.",
        )
    book = Workbook(write_only=True)
    title = re.sub(r"[\[\]:*?/\\]", "_", opts.get("sheet") or "Sheet1")[:31] or "Sheet1"
    sheet = book.create_sheet(title)

    def cell(value: Any) -> Any:
        value = _cell(value, native_dates=True)
        if isinstance(value, str):
            value = ILLEGAL_CHARACTERS_RE.sub("", value)
            if value.startswith("="):
                # text that looks like a formula stays text: no formula injection
                c = WriteOnlyCell(sheet, value=value)
                c.data_type = "s"
                return c
        return value

    if header is not None:
        sheet.append([cell(h) for h in header])
    for row in rows:
        sheet.append([cell(v) for v in row])
    book.save(out)


WRITERS = {
    "json": write_json,
    "yaml": write_yaml,
    "toml": write_toml,
    "xml": write_xml,
    "csv": write_csv,
    "tsv": write_tsv,
    "xlsx": write_xlsx,
}


class DataConverter(Converter):
    filetype: ClassVar[str] = "data"
    engine: ClassVar[str] = "python"

    def pairs(self) -> Mapping[str, frozenset[str]]:
        return {src: frozenset(f for f in FORMATS if f != src) for src in FORMATS}

    def options(self, input_format: str, output_format: str) -> Mapping[str, Option]:
        opts: dict[str, Option] = {}
        if output_format in ("json", "xml"):
            opts["indent"] = Option(
                "integer",
                "Spaces per indentation level (0: compact).",
                default=2,
                minimum=0,
                maximum=8,
            )
        if output_format == "yaml":
            opts["indent"] = Option(
                "integer", "Spaces per indentation level.", default=2, minimum=2, maximum=8
            )
        if output_format == "xml":
            opts["root"] = Option(
                "string",
                "Name of the root element. By default the "
                "data's single top-level key, if it has one, else 'root'.",
            )
        if input_format == "csv":
            opts["delimiter"] = Option(
                "string",
                "Field separator of the CSV input ('auto' guesses it).",
                default="auto",
                enum=("auto", *DELIMITERS),
            )
        elif output_format == "csv":
            opts["delimiter"] = Option(
                "string", "Field separator of the CSV output.", default=",", enum=DELIMITERS
            )
        if input_format in TABLE:
            opts["header"] = Option(
                "boolean",
                "The first row holds column names: rows become objects keyed by them (else arrays).",
                default=True,
            )
        if input_format in ("csv", "tsv"):
            opts["infer_types"] = Option(
                "boolean",
                "Turn cells that are plain numbers into numbers (01234 stays text).",
                default=True,
            )
        if input_format == "xlsx":
            opts["sheet"] = Option(
                "string",
                "Sheet to read: its name, or its number (1 is the first). Default: the first sheet.",
            )
        elif output_format == "xlsx":
            opts["sheet"] = Option("string", "Name of the sheet to write.", default="Sheet1")
        return opts

    def check(self, task: Task) -> None:
        check_declared(task.inputs[0], task.input_format)
        if task.input_format == "xlsx":
            _check_xlsx(task.inputs[0])

    def convert(self, task: Task) -> Result:
        src = task.inputs[0]
        out = task.workdir / f"{src.stem or 'data'}.{task.output_format}"
        if out.exists() or out in task.inputs:
            out = task.workdir / f"{src.stem or 'data'}-converted.{task.output_format}"
        try:
            data = READERS[task.input_format](src, task.options)
            task.progress(0.5)
            WRITERS[task.output_format](data, out, task.options)
        except RecursionError as exc:
            out.unlink(missing_ok=True)
            raise ConversionError(
                "The data is nested too deeply.", "Flatten the structure (fewer levels)."
            ) from exc
        except (TypeError, ValueError) as exc:
            out.unlink(missing_ok=True)
            raise ConversionError(
                f"The data cannot be written as {task.output_format}: {str(exc)[:200]}",
                "Some values have no equivalent in that format; try json or yaml.",
            ) from exc
        task.progress(1.0)
        return Result(out)

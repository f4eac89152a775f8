"""Writing plain Python values as json, yaml, toml, xml, csv, tsv or xlsx (`WRITERS`)."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from converters.base import ConversionError

XLSX_MAX_ROWS, XLSX_MAX_COLS = 1_048_576, 16_384
# a table of records may be this many times emptier than full, once it is this large
SPARSE_FACTOR, TABLE_MIN_CELLS = 50, 1_000_000
_XML_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_XML_NAME = re.compile(r"[A-Za-z_][\w.-]*")
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


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
        _check_sparse(len(flats), len(header), sum(len(f) for f in flats))
        return header, [[f.get(k) for k in header] for f in flats]
    if data and all(isinstance(r, list) for r in data):
        return None, data
    return ["value"], [[r] for r in data]


def _check_sparse(rows: int, columns: int, values: int) -> None:
    """Refuse records that share so few fields that their table would be mostly empty
    cells: a few MB of JSON whose every record has a field of its own would otherwise be
    a table of billions of cells (hours of CPU, or the memory limit)."""
    cells = rows * columns
    if cells > max(TABLE_MIN_CELLS, SPARSE_FACTOR * values):
        raise ConversionError(
            f"The records share few fields: as a table they would be {rows:,} rows by "
            f"{columns:,} columns, {cells:,} cells for {values:,} values.",
            "Convert them to json, yaml or xml, which keep each record's own fields, or "
            "give the records the same fields.",
        )


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

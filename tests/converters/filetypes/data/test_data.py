"""converters.filetypes.data.converter: every pair on generated files, options, malformed and hostile input.

Inputs are written with the standard writers (json, csv, yaml, tomli_w, openpyxl, plain
XML text) and outputs read back with independent readers (json, csv, yaml, tomllib,
ElementTree, openpyxl), never with the converter's own code.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time
import tomllib
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import tomli_w
import yaml

from converters.base import ConversionError, Limits, Task
from converters.filetypes.data.converter import FORMATS, DataConverter
from converters.sandbox import parent as sandbox
from converters.sandbox.failures import SandboxError

CONV = DataConverter()
RECORDS = [
    {"id": 1, "name": "Ada Lovelace", "score": 9.5, "city": "London"},
    {"id": 2, "name": 'Bob, "the builder"', "score": 7, "city": "Zürich"},
    {"id": 3, "name": "Chloé", "score": 8.25, "city": ""},
]
COLUMNS = list(RECORDS[0])


def write_input(fmt: str, folder: Path) -> Path:
    path = folder / f"people.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(RECORDS))
    elif fmt == "yaml":
        path.write_text(yaml.safe_dump(RECORDS, allow_unicode=True))
    elif fmt == "toml":
        path.write_text(tomli_w.dumps({"people": RECORDS}))
    elif fmt == "xml":
        rows = "".join(
            "<person>" + "".join(f"<{k}>{_esc(v)}</{k}>" for k, v in r.items()) + "</person>" for r in RECORDS
        )
        path.write_text(f'<?xml version="1.0" encoding="UTF-8"?><people>{rows}</people>')
    elif fmt in ("csv", "tsv"):
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, COLUMNS, delimiter="," if fmt == "csv" else "\t")
            writer.writeheader()
            writer.writerows(RECORDS)
    elif fmt == "xlsx":
        book = openpyxl.Workbook()
        sheet = book.active
        sheet.append(COLUMNS)
        for r in RECORDS:
            sheet.append([r[c] or None for c in COLUMNS])
        book.save(path)
    return path


def _esc(value: Any) -> str:
    return str(value).replace("&", "&amp;").replace("<", "&lt;")


def _unwrap(data: Any) -> Any:
    """The list of records inside wrapper keys ({"people": {"person": [...]}})."""
    while isinstance(data, dict) and len(data) == 1:
        data = next(iter(data.values()))
    return data


def read_records(path: Path, fmt: str) -> list[dict[str, str]]:
    """Independent reader: records with every value as text (XML and CSV know no types)."""
    if fmt == "json":
        rows = _unwrap(json.loads(path.read_text()))
    elif fmt == "yaml":
        rows = _unwrap(yaml.safe_load(path.read_text()))
    elif fmt == "toml":
        rows = _unwrap(tomllib.loads(path.read_text()))
        rows = [{c: r.get(c) for c in COLUMNS} for r in rows]  # TOML has no null: key left out
    elif fmt == "xml":
        root = ET.parse(path).getroot()
        elements = list(root)
        while len(elements) == 1 and len(list(elements[0])) and len(list(elements[0][0])):
            elements = list(elements[0])
        rows = [{child.tag: child.text or "" for child in el} for el in elements]
    elif fmt in ("csv", "tsv"):
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="," if fmt == "csv" else "\t"))
    else:
        sheet = openpyxl.load_workbook(path).active
        values = list(sheet.iter_rows(values_only=True))
        rows = [dict(zip(values[0], row, strict=True)) for row in values[1:]]
    return [{str(k): _text(v) for k, v in row.items()} for row in rows]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


EXPECTED = [{k: _text(v) for k, v in r.items()} for r in RECORDS]
PAIRS = [(s, d) for s, ds in sorted(CONV.pairs().items()) for d in sorted(ds)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("data-inputs")
    return {fmt: write_input(fmt, folder) for fmt in FORMATS}


def convert(src: Path, src_fmt: str, dst_fmt: str, workdir: Path, **options: Any) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    task = Task([src], src_fmt, dst_fmt, options, workdir)
    CONV.check(task)
    out = CONV.convert(task).path
    assert out.parent == workdir and out.suffix == f".{dst_fmt}"
    return out


def test_every_format_reaches_every_other() -> None:
    assert len(PAIRS) == len(FORMATS) * (len(FORMATS) - 1)


@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=[f"{s}-{d}" for s, d in PAIRS])
def test_matrix(src: str, dst: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    out = convert(inputs[src], src, dst, tmp_path)
    assert read_records(out, dst) == EXPECTED


def test_types_survive_between_typed_formats(inputs: dict, tmp_path: Path) -> None:
    out = convert(inputs["csv"], "csv", "json", tmp_path / "a")
    assert json.loads(out.read_text()) == RECORDS  # numbers inferred, text kept
    out = convert(inputs["xlsx"], "xlsx", "yaml", tmp_path / "b")
    assert yaml.safe_load(out.read_text())[0] == RECORDS[0]


def test_nested_tree_round_trip(tmp_path: Path) -> None:
    tree = {"server": {"host": "example.org", "ports": [80, 443], "tls": True,
                       "owner": {"name": "Ada", "since": "2020-01-01"}}}  # fmt: skip
    src = tmp_path / "conf.json"
    src.write_text(json.dumps(tree))
    toml_out = convert(src, "json", "toml", tmp_path / "t")
    assert tomllib.loads(toml_out.read_text()) == tree
    yaml_out = convert(toml_out, "toml", "yaml", tmp_path / "y")
    assert yaml.safe_load(yaml_out.read_text()) == tree
    xml_out = convert(yaml_out, "yaml", "xml", tmp_path / "x")
    root = ET.parse(xml_out).getroot()
    assert root.tag == "server"
    assert [p.text for p in root.findall("ports")] == ["80", "443"]
    assert root.findtext("owner/name") == "Ada" and root.findtext("tls") == "true"
    back = json.loads(convert(xml_out, "xml", "json", tmp_path / "j").read_text())
    assert back["server"]["ports"] == ["80", "443"] and back["server"]["owner"]["name"] == "Ada"


def test_flattened_columns_for_nested_records(tmp_path: Path) -> None:
    src = tmp_path / "nested.json"
    src.write_text(json.dumps([{"a": 1, "b": {"c": 2, "d": [1, 2]}}, {"a": 3, "e": None}]))
    out = convert(src, "json", "csv", tmp_path / "o")
    rows = list(csv.reader(out.open(newline="")))
    assert rows == [["a", "b.c", "b.d", "e"], ["1", "2", "[1, 2]", ""], ["3", "", "", ""]]


def test_xlsx_dates_become_iso_text(tmp_path: Path) -> None:
    src = tmp_path / "dates.xlsx"
    book = openpyxl.Workbook()
    book.active.append(["when", "n"])
    book.active.append([dt.datetime(2024, 3, 1, 12, 30), 5])
    book.save(src)
    out = convert(src, "xlsx", "json", tmp_path / "o")
    assert json.loads(out.read_text()) == [{"when": "2024-03-01T12:30:00", "n": 5}]


# --- options ---------------------------------------------------------------------------


def test_indent(inputs: dict, tmp_path: Path) -> None:
    out = convert(inputs["csv"], "csv", "json", tmp_path / "i4", indent=4)
    assert out.read_text().splitlines()[1].startswith("    {")
    out = convert(inputs["csv"], "csv", "json", tmp_path / "i0", indent=0)
    assert out.read_text().count("\n") == 1 and json.loads(out.read_text()) == RECORDS
    nested = tmp_path / "nested.json"
    nested.write_text('{"a": {"b": 1}}')
    out = convert(nested, "json", "yaml", tmp_path / "y4", indent=4)
    assert out.read_text() == "a:\n    b: 1\n"
    out = convert(inputs["json"], "json", "xml", tmp_path / "x0", indent=0)
    assert "\n" not in out.read_text().strip().split("\n", 1)[1]


def test_csv_delimiters(tmp_path: Path, inputs: dict) -> None:
    out = convert(inputs["json"], "json", "csv", tmp_path / "semi", delimiter=";")
    rows = list(csv.DictReader(out.open(newline=""), delimiter=";"))
    assert rows == EXPECTED
    for delimiter in ("auto", ";"):  # guessed, then stated
        back = convert(out, "csv", "json", tmp_path / f"back-{delimiter}", delimiter=delimiter)
        assert json.loads(back.read_text()) == RECORDS


def test_xml_root_element(inputs: dict, tmp_path: Path) -> None:
    out = convert(inputs["csv"], "csv", "xml", tmp_path / "r", root="catalogue")
    root = ET.parse(out).getroot()
    assert root.tag == "catalogue" and [el.tag for el in root] == ["item"] * 3
    out = convert(inputs["csv"], "csv", "xml", tmp_path / "bad", root="1 bad name")
    assert ET.parse(out).getroot().tag == "_1_bad_name"  # always a valid XML name


def test_header_off_and_type_inference_off(inputs: dict, tmp_path: Path) -> None:
    out = convert(inputs["csv"], "csv", "json", tmp_path / "h", header=False, infer_types=False)
    data = json.loads(out.read_text())
    assert data[0] == COLUMNS and data[1] == ["1", "Ada Lovelace", "9.5", "London"]


def test_zip_codes_stay_text(tmp_path: Path) -> None:
    src = tmp_path / "codes.csv"
    src.write_text("zip,n\n01234,5\n")
    out = convert(src, "csv", "json", tmp_path / "o")
    assert json.loads(out.read_text()) == [{"zip": "01234", "n": 5}]


def test_repeated_and_missing_header_names_are_made_unique(tmp_path: Path) -> None:
    """A header repeating one name (a hostile CSV of a few hundred kB) names its columns
    a, a_2, a_3...: in one pass, where a search from _2 for every column took minutes."""
    src = tmp_path / "wide.csv"
    repeats = 60_000
    src.write_text("a_3," + "a," * repeats + "\n" + "1," * (repeats + 1) + "1\n")
    out = convert(src, "csv", "json", tmp_path / "o")
    names = list(json.loads(out.read_text())[0])
    expected = ["a_3", "a", "a_2", *(f"a_{n}" for n in range(4, repeats + 2)), f"column{repeats + 2}"]
    assert names == expected


@pytest.mark.parametrize("target", ["csv", "xlsx"])
def test_records_without_common_fields_are_refused_as_a_table(tmp_path: Path, target: str) -> None:
    """Each record with a field of its own: 1.5 MB of JSON, 10 billion cells as a table."""
    src = tmp_path / "sparse.json"
    src.write_text(json.dumps([{f"k{i}": 1} for i in range(100_000)]))
    with pytest.raises(ConversionError, match="share few fields") as refused:
        convert(src, "json", target, tmp_path / target)
    assert "100,000 rows by 100,000 columns" in refused.value.message
    assert "json, yaml or xml" in (refused.value.hint or "")
    # the same records keep their fields where a tree can hold them
    assert len(yaml.safe_load(convert(src, "json", "yaml", tmp_path / "y").read_text())) == 100_000
    # records that share most of their fields are a table, however many
    dense = tmp_path / "dense.json"
    dense.write_text(
        json.dumps([{"id": i, "name": "n", **({"note": "x"} if i % 2 else {})} for i in range(50_000)])
    )
    rows = list(csv.DictReader(convert(dense, "json", "csv", tmp_path / "dense").open(newline="")))
    assert len(rows) == 50_000 and rows[1] == {"id": "1", "name": "n", "note": "x"}


def test_sheet_choice(tmp_path: Path) -> None:
    src = tmp_path / "two.xlsx"
    book = openpyxl.Workbook()
    book.active.title = "first"
    book.active.append(["a"])
    book.active.append([1])
    second = book.create_sheet("second")
    second.append(["b"])
    second.append([2])
    book.save(src)
    assert json.loads(convert(src, "xlsx", "json", tmp_path / "n", sheet="second").read_text()) \
        == [{"b": 2}]  # fmt: skip
    assert json.loads(convert(src, "xlsx", "json", tmp_path / "i", sheet="2").read_text()) \
        == [{"b": 2}]  # fmt: skip
    with pytest.raises(ConversionError, match="no sheet 'third'") as err:
        convert(src, "xlsx", "json", tmp_path / "x", sheet="third")
    assert "first, second" in (err.value.hint or "")
    out = convert(src, "xlsx", "csv", tmp_path / "c")
    assert out.read_text().split() == ["a", "1"]
    named = convert(tmp_path / "c" / "two.csv", "csv", "xlsx", tmp_path / "w", sheet="People")
    assert openpyxl.load_workbook(named).sheetnames == ["People"]


def test_options_schema() -> None:
    assert set(CONV.options("csv", "xml")) == {"indent", "root", "delimiter", "header",
                                               "infer_types"}  # fmt: skip
    assert CONV.options("json", "csv")["delimiter"].default == ","
    assert CONV.options("yaml", "json")["indent"].schema()["maximum"] == 8
    assert "sheet" in CONV.options("xlsx", "json") and "sheet" in CONV.options("json", "xlsx")


# --- malformed input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "text", "where"),
    [
        ("json", '{\n  "a": 1,\n  "b": ,\n}', "line 3, column 8"),
        ("yaml", "a: 1\nb: [1, 2\nc: 3\n", "line 3"),
        ("toml", 'a = 1\nb = "unterminated\n', "line 2"),
        ("xml", "<a>\n  <b></a>\n", "line 2, column"),
        ("csv", 'a,b\n"1,2\n', "line"),
    ],
)
def test_malformed_input_says_where(fmt: str, text: str, where: str, tmp_path: Path) -> None:
    src = tmp_path / f"bad.{fmt}"
    src.write_text(text)
    with pytest.raises(ConversionError) as err:
        convert(src, fmt, "json" if fmt != "json" else "yaml", tmp_path / "o")
    assert where in err.value.message, err.value.message
    assert not list((tmp_path / "o").iterdir())  # no half-written output left behind


def test_formula_text_stays_text_in_xlsx(tmp_path: Path) -> None:
    src = tmp_path / "inject.csv"
    src.write_text('name,link\nx,"=HYPERLINK(""http://evil.example"",""hi"")"\n')
    out = convert(src, "csv", "xlsx", tmp_path / "o")
    cell = openpyxl.load_workbook(out).active["B2"]
    assert cell.data_type == "s" and cell.value.startswith("=HYPERLINK")


# --- hostile input ---------------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<lolz>&lol9;</lolz>
"""


@pytest.mark.parametrize(
    "text",
    [
        BILLION_LAUGHS,
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>',
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % p SYSTEM "file:///etc/passwd">%p;]><r/>',
    ],
    ids=["billion-laughs", "external-entity", "parameter-entity"],
)
def test_xml_entities_never_resolved(text: str, tmp_path: Path) -> None:
    src = tmp_path / "evil.xml"
    src.write_text(text)
    started = time.monotonic()
    with pytest.raises(ConversionError, match="entities"):
        convert(src, "xml", "json", tmp_path / "o")
    assert time.monotonic() - started < 2


def test_xinclude_and_external_dtd_stay_inert(tmp_path: Path) -> None:
    src = tmp_path / "include.xml"
    src.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE r SYSTEM "file:///etc/passwd">\n'
        '<r xmlns:xi="http://www.w3.org/2001/XInclude">'
        '<xi:include href="file:///etc/passwd" parse="text"/><a>1</a></r>'
    )
    out = convert(src, "xml", "json", tmp_path / "o")
    text = out.read_text()
    assert "root:" not in text
    assert json.loads(text) == {"r": {"include": {"@href": "file:///etc/passwd", "@parse":
                                                  "text"}, "a": "1"}}  # fmt: skip


def test_yaml_alias_bomb_refused(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    src = tmp_path / "bomb.yaml"
    src.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    with pytest.raises(ConversionError, match="alias"):
        convert(src, "yaml", "json", tmp_path / "o")
    assert time.monotonic() - started < 5


def test_yaml_recursive_alias_refused(tmp_path: Path) -> None:
    src = tmp_path / "loop.yaml"
    src.write_text("a: &a\n  self: *a\n")
    with pytest.raises(ConversionError, match="refers to itself"):
        convert(src, "yaml", "json", tmp_path / "o")


def test_yaml_tags_cannot_build_objects(tmp_path: Path) -> None:
    src = tmp_path / "tags.yaml"
    src.write_text("x: !!python/object/apply:os.system ['touch /tmp/pwned-by-yaml']\n")
    with pytest.raises(ConversionError, match="YAML is malformed"):
        convert(src, "yaml", "json", tmp_path / "o")
    assert not Path("/tmp/pwned-by-yaml").exists()


def xlsx_sparse_bomb(path: Path) -> Path:
    """Two cells, at A1 and XFD1048576: calamine would allocate their whole rectangle."""
    ns = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    pkg = "http://schemas.openxmlformats.org/package/2006"
    office = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    members = {
        "[Content_Types].xml": (
            f'<Types xmlns="{pkg}/content-types">'
            '<Default Extension="rels" ContentType="application/xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" ContentType="{office}.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" '
            f'ContentType="{office}.worksheet+xml"/></Types>'
        ),
        "_rels/.rels": (
            f'<Relationships xmlns="{pkg}/relationships"><Relationship Id="rId1" '
            f'Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
        ),
        "xl/workbook.xml": (
            f'<workbook xmlns="{ns}" xmlns:r="{rel}"><sheets>'
            '<sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            f'<Relationships xmlns="{pkg}/relationships"><Relationship Id="rId1" '
            f'Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'
        ),
        "xl/worksheets/sheet1.xml": (
            f'<worksheet xmlns="{ns}"><sheetData><row r="1"><c r="A1"><v>1</v></c></row>'
            '<row r="1048576"><c r="XFD1048576"><v>2</v></c></row></sheetData></worksheet>'
        ),
    }
    with zipfile.ZipFile(path, "w") as zf:
        for name, body in members.items():
            zf.writestr(name, body)
    return path


async def test_xlsx_cell_bomb_refused_before_reading(tmp_path: Path) -> None:
    # Through the sandbox: should the check ever regress, calamine dies there, not here.
    src = xlsx_sparse_bomb(tmp_path / "bomb.xlsx")
    with pytest.raises(SandboxError) as err:
        await sandbox.run("data", "xlsx", "json", {}, [src], tmp_path / "job",
                          limits=Limits(memory_bytes=1024**3, wall_seconds=30))  # fmt: skip
    assert err.value.kind == "converter", err.value.detail
    assert "1,048,576 rows by 16,384 columns" in err.value.message


@pytest.mark.slow  # a workbook bomb of a million rows
def test_xlsx_zip_bomb_refused(tmp_path: Path) -> None:
    src = tmp_path / "zipbomb.xlsx"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/workbook.xml", "<workbook/>")
        with zf.open("xl/sharedStrings.xml", "w", force_zip64=True) as fh:
            chunk = b" " * (1024 * 1024)
            for _ in range(600):
                fh.write(chunk)
    assert src.stat().st_size < 2 * 1024**2
    with pytest.raises(ConversionError, match="unpacks to more than 512 MiB"):
        convert(src, "xlsx", "json", tmp_path / "o")


def test_mismatched_content_refused(inputs: dict, tmp_path: Path) -> None:
    fake = tmp_path / "fake.json"
    fake.write_bytes(inputs["xlsx"].read_bytes())
    with pytest.raises(ConversionError) as err:
        convert(fake, "json", "csv", tmp_path / "o")
    assert err.value.message == "The file is not a json: its content is an xlsx file."


def test_deep_nesting_is_a_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "deep.json"
    src.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConversionError, match="nested too deeply"):
        convert(src, "json", "yaml", tmp_path / "o")


async def test_through_the_sandbox(inputs: dict, tmp_path: Path) -> None:
    result = await sandbox.run("data", "csv", "yaml", {}, [inputs["csv"]], tmp_path / "job")
    assert yaml.safe_load(io.StringIO(result.path.read_text())) == RECORDS

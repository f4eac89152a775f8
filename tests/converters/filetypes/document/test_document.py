"""The document converter: every listed pair once, on small files generated here, each
output decoded by an independent reader; then the options and the engine plumbing."""

from __future__ import annotations

import csv
import subprocess
import threading
import zipfile
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as SafeET
import openpyxl
import pikepdf
import pytest

from converters.base import ConversionError, Converter, Limits, RequestError, Task
from converters.filetypes.document import DocumentConverter, LibreOfficeConverter, PandocConverter
from converters.registry import Registry
from converters.sandbox import parent as sandbox
from converters.sandbox.failures import SandboxError
from converters.tools import pandoc, process
from converters.tools.office import soffice as office
from tests.helpers import wait_until_sync
from tests.office_samples import odf_bytes, odp_slide
from tests.pdf_samples import page_texts

WORDS = ("Quokka", "Zephyr")

_no_office = pytest.mark.skipif(office.unavailable() is not None, reason="no LibreOffice")


def needs_office(test: Any) -> Any:
    """Runs LibreOffice: skipped without it, and slow (seconds per start)."""
    return pytest.mark.slow(_no_office(test))


needs_pandoc = pytest.mark.skipif(pandoc.unavailable() is not None, reason="no pandoc")

CONVERTER = DocumentConverter()


# --------------------------------------------------------------------------- readers


def xml_text(data: bytes) -> str:
    return " ".join(t for t in SafeET.fromstring(data).itertext())


def zip_xml_text(path: Path, predicate: Callable[[str], bool]) -> str:
    with zipfile.ZipFile(path) as zf:
        return " ".join(xml_text(zf.read(name)) for name in zf.namelist() if predicate(name))


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_text(raw: str) -> str:
    parser = _HTMLText()
    parser.feed(raw)
    return " ".join(parser.parts)


def ole_text(path: Path) -> str:
    """Binary Office files: check the OLE2 signature, return the strings found inside."""
    data = path.read_bytes()
    assert data[:8] == bytes.fromhex("D0CF11E0A1B11AE1"), "not an OLE2 compound file"
    found = [w for w in WORDS if w.encode("latin-1") in data or w.encode("utf-16-le") in data]
    return " ".join(found)


def read_text(path: Path, fmt: str) -> str:
    """Decode an output with a reader that does not share code with the converter."""
    if fmt == "pdf":
        texts = page_texts(path)
        assert len(texts) >= 1
        return " ".join(texts)
    if fmt in ("docx", "pptx"):
        return zip_xml_text(path, lambda n: n.endswith(".xml") and n.startswith(("word/", "ppt/")))
    if fmt == "xlsx":
        wb = openpyxl.load_workbook(path, read_only=True)
        return " ".join(str(v) for ws in wb.worksheets for row in ws.iter_rows(values_only=True) for v in row)
    if fmt in ("odt", "ods", "odp"):
        return zip_xml_text(path, lambda n: n == "content.xml")
    if fmt == "epub":
        return zip_xml_text(path, lambda n: n.endswith((".xhtml", ".html")))
    if fmt == "fb2":
        return xml_text(path.read_bytes())
    if fmt in ("doc", "xls", "ppt"):
        return ole_text(path)
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8") as fh:
            return " ".join(cell for row in csv.reader(fh) for cell in row)
    if fmt == "html":
        return html_text(path.read_text(encoding="utf-8"))
    return path.read_text(encoding="utf-8")  # txt, md, rst, org, tex, rtf


# --------------------------------------------------------------------------- samples

MARKDOWN = "# Quokka report\n\nZephyr winds blow over *the* island.\n\n## Second part\n\nMore.\n"
TEXT_SAMPLES = {
    "md": MARKDOWN,
    "html": "<!DOCTYPE html><html><head><title>Report</title></head><body>"
    "<h1>Quokka report</h1><p>Zephyr winds blow.</p></body></html>",
    "rst": "Quokka report\n=============\n\nZephyr winds blow.\n",
    "org": "* Quokka report\nZephyr winds blow.\n",
    "tex": "\\documentclass{article}\\begin{document}\\section{Quokka report}"
    "Zephyr winds blow.\\end{document}\n",
    "txt": "Quokka report\n\nZephyr winds blow.\n",
}


def run_pandoc(src: Path, dest: Path, *args: str) -> Path:
    tool = pandoc.pandoc_path()
    assert tool
    subprocess.run([tool, "--sandbox", *args, "-o", str(dest), str(src)], check=True)
    return dest


def make_xlsx(path: Path) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Animals"
    ws.append(["Quokka", "Zephyr"])
    ws.append([42, 7])
    other = wb.create_sheet("Other")
    other.append(["Wombat", "semi;colon"])
    wb.save(path)
    return path


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("doc-samples")
    out: dict[str, Path] = {}
    for fmt, text in TEXT_SAMPLES.items():
        out[fmt] = root / f"sample.{fmt}"
        out[fmt].write_text(text, encoding="utf-8")
    md = out["md"]
    out["docx"] = run_pandoc(md, root / "sample.docx")
    out["odt"] = run_pandoc(md, root / "sample.odt")
    out["rtf"] = run_pandoc(md, root / "sample.rtf", "--standalone")
    out["epub"] = run_pandoc(md, root / "sample.epub", "--metadata=title:Quokka")
    out["xlsx"] = make_xlsx(root / "sample.xlsx")
    out["odp"] = root / "sample.odp"
    out["odp"].write_bytes(odf_bytes("presentation", odp_slide()))
    return _Samples(out, root)


# binary formats and pptx come from LibreOffice itself (seconds each): made when first asked
_OFFICE_MADE = {"doc": "docx", "xls": "xlsx", "ods": "xlsx", "pptx": "odp", "ppt": "odp"}


class _Samples(dict[str, Path]):
    """The sample files; the LibreOffice-made ones are made on first use, so a run of the
    fast tests (`-m "not slow"`) never starts LibreOffice for them."""

    def __init__(self, made: dict[str, Path], root: Path) -> None:
        super().__init__(made)
        self.root = root

    def __missing__(self, fmt: str) -> Path:
        src = _OFFICE_MADE.get(fmt)
        if src is None or office.unavailable() is not None:
            raise KeyError(fmt)
        made = office.convert(self[src], src, fmt, self.root / f"make-{fmt}")
        self[fmt] = made.rename(self.root / f"sample.{fmt}")
        return self[fmt]


class Recorder:
    """A progress callback that remembers what it was told."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def __call__(self, fraction: float) -> None:
        self.seen.append(fraction)


def progress_of(task: Task) -> list[float]:
    assert isinstance(task.progress, Recorder)
    return task.progress.seen


def make_task(
    src: Path,
    in_fmt: str,
    out_fmt: str,
    workdir: Path,
    converter: Converter = CONVERTER,
    **options: object,
) -> Task:
    """A task as the service builds it: input copied into the job folder, options validated."""
    workdir.mkdir(parents=True, exist_ok=True)
    staged = workdir / f"upload.{in_fmt}"
    staged.write_bytes(src.read_bytes())
    values = Registry([converter]).validate(converter.filetype, in_fmt, out_fmt, options)
    return Task([staged], in_fmt, out_fmt, values, workdir, Recorder())


def run(task: Task) -> Path:
    CONVERTER.check(task)
    result = CONVERTER.convert(task)
    assert result.path.is_file()
    assert result.path.parent == task.workdir
    return result.path


# ---------------------------------------------------------------------- the matrix

ALL_PAIRS = sorted((src, dst) for src, dsts in CONVERTER.pairs().items() for dst in dsts)


def test_pairs_cover_the_brief() -> None:
    pairs = CONVERTER.pairs()
    if office.unavailable() is None:
        for src in ("docx", "doc", "odt", "rtf", "xlsx", "xls", "ods", "pptx", "ppt", "odp"):
            assert "pdf" in pairs[src]
        assert {"odt", "docx"} <= pairs["docx"] | pairs["odt"]
        assert {"csv", "ods"} <= pairs["xlsx"]
        assert "pptx" in pairs["odp"] and "odp" in pairs["pptx"]
        assert "pdf" in pairs["md"] and "pdf" in pairs["html"]
    for src in ("md", "html", "rst", "txt", "docx", "odt", "epub", "org", "tex"):
        assert {"md", "html", "rst", "docx", "odt", "txt"} - {src} <= pairs[src]
    assert all(src not in dsts for src, dsts in pairs.items())


@pytest.mark.slow  # 2-13 s a pair: LibreOffice or pandoc per pair
@pytest.mark.parametrize(("src", "dst"), ALL_PAIRS, ids=[f"{s}-{d}" for s, d in ALL_PAIRS])
def test_every_pair(src: str, dst: str, samples: dict[str, Path], tmp_path: Path) -> None:
    task = make_task(samples[src], src, dst, tmp_path)
    out = run(task)
    text = read_text(out, dst)
    for word in WORDS:
        assert word in text, f"{word!r} missing from {src}->{dst}: {text[:300]!r}"
    seen = progress_of(task)
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)


# ------------------------------------------------------------------------- options


@needs_office
def test_page_range_keeps_only_those_pages(tmp_path: Path) -> None:
    md = tmp_path / "pages.md"
    md.write_text(
        "\n\n".join(
            f"Page{n} " + "filler " * 10 + '\n\n```{=openxml}\n<w:p><w:r><w:br w:type="page"/>'
            "</w:r></w:p>\n```"
            for n in (1, 2, 3)
        ),
        encoding="utf-8",
    )
    docx = run_pandoc(md, tmp_path / "pages.docx")
    out = run(make_task(docx, "docx", "pdf", tmp_path / "job", pages="2-3"))
    texts = page_texts(out)
    assert len(texts) == 2
    assert "Page2" in texts[0] and "Page3" in texts[1]
    assert "Page1" not in " ".join(texts)


@needs_office
def test_pdf_a(samples: dict[str, Path], tmp_path: Path) -> None:
    out = run(make_task(samples["odt"], "odt", "pdf", tmp_path, pdf_a=True))
    with pikepdf.open(out) as pdf:
        assert "pdfaid" in pdf.Root.Metadata.read_bytes().decode("utf-8", "replace")


@needs_office
def test_csv_sheet_and_delimiter(samples: dict[str, Path], tmp_path: Path) -> None:
    out = run(make_task(samples["xlsx"], "xlsx", "csv", tmp_path, sheet=2, delimiter=";"))
    rows = list(csv.reader(out.open(newline="", encoding="utf-8"), delimiter=";"))
    assert rows == [["Wombat", "semi;colon"]]


@needs_office
def test_csv_sheet_that_does_not_exist(samples: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConversionError):
        run(make_task(samples["xlsx"], "xlsx", "csv", tmp_path, sheet=9))


def test_options_are_published_and_validated() -> None:
    reg = Registry([CONVERTER])
    if office.unavailable() is None:
        schema = reg.options_schema("document", "xlsx", "csv")["properties"]
        assert schema["delimiter"]["enum"] == [",", ";", "\t", "|"]
        assert schema["sheet"]["minimum"] == 1
        assert "pages" in reg.options_schema("document", "pptx", "pdf")["properties"]
        with pytest.raises(RequestError) as err:
            reg.validate("document", "xlsx", "csv", {"delimiter": "x"})
        assert err.value.field == "delimiter"
    flavors = reg.options_schema("document", "docx", "md")["properties"]["markdown_flavor"]
    assert flavors["default"] == "gfm" and "commonmark" in flavors["enum"]


def test_bad_page_range_is_refused_before_converting(samples: dict[str, Path], tmp_path: Path) -> None:
    task = make_task(samples["md"], "md", "html", tmp_path)
    task.options["pages"] = "1-x"
    with pytest.raises(ConversionError, match="page range"):
        CONVERTER.check(task)


@needs_pandoc
def test_markdown_flavor_of_the_input(tmp_path: Path) -> None:
    md = tmp_path / "f.md"
    md.write_text("Quokka ~~gone~~ Zephyr\n", encoding="utf-8")
    gfm = html_raw(run(make_task(md, "md", "html", tmp_path / "a", markdown_flavor="gfm")))
    strict = html_raw(run(make_task(md, "md", "html", tmp_path / "b", markdown_flavor="markdown_strict")))
    assert "<del>gone</del>" in gfm
    assert "~~gone~~" in strict


def html_raw(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@needs_pandoc
def test_markdown_flavor_of_the_output(samples: dict[str, Path], tmp_path: Path) -> None:
    md = tmp_path / "t.md"
    md.write_text("| a | b |\n|---|---|\n| Quokka | Zephyr |\n", encoding="utf-8")
    docx = run_pandoc(md, tmp_path / "t.docx")
    gfm = run(make_task(docx, "docx", "md", tmp_path / "g", markdown_flavor="gfm")).read_text()
    cm = run(make_task(docx, "docx", "md", tmp_path / "c", markdown_flavor="commonmark"))
    assert "| Quokka" in gfm  # pipe table
    assert "<table" in cm.read_text()  # CommonMark has no tables: raw HTML


@needs_pandoc
def test_table_of_contents(samples: dict[str, Path], tmp_path: Path) -> None:
    out = run(make_task(samples["md"], "md", "html", tmp_path, toc=True))
    assert 'id="TOC"' in out.read_text(encoding="utf-8")


@needs_pandoc
def test_text_input_is_not_interpreted_as_markup(tmp_path: Path) -> None:
    txt = tmp_path / "raw.txt"
    txt.write_text("Quokka <b>not bold</b> *not em* Zephyr\n", encoding="utf-8")
    out = run(make_task(txt, "txt", "html", tmp_path / "job"))
    raw = out.read_text(encoding="utf-8")
    assert "&lt;b&gt;not bold&lt;/b&gt;" in raw and "<em>" not in raw


# -------------------------------------------------------------------- the plumbing


@needs_office
def test_two_conversions_at_once_both_succeed(samples: dict[str, Path], tmp_path: Path) -> None:
    """Each job has its own LibreOffice profile, so parallel jobs do not collide."""
    results: dict[int, Path | Exception] = {}

    def job(n: int) -> None:
        try:
            results[n] = run(make_task(samples["docx"], "docx", "pdf", tmp_path / f"j{n}"))
        except Exception as exc:  # reported below
            results[n] = exc

    threads = [threading.Thread(target=job, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in range(2):
        assert isinstance(results[n], Path), results[n]
        assert "Quokka" in read_text(results[n], "pdf")


@needs_office
def test_timeout_kills_libreoffice(samples: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="longer than"):
        office.convert(samples["docx"], "docx", "pdf", tmp_path, timeout=0.05)
    marker = str(tmp_path).encode()

    def leftovers() -> list[str]:
        found = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if marker in (proc / "cmdline").read_bytes():
                        found.append(proc.name)
                except OSError:
                    pass
        return found

    wait_until_sync(lambda: leftovers() == [], 10, f"LibreOffice processes gone (left: {leftovers()})")


def test_engines_are_offered_only_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(office, "soffice_path", lambda: None)
    conv = DocumentConverter()
    assert conv.unavailable() is None  # pandoc still works
    pairs = conv.pairs()
    assert "xlsx" not in pairs and "pptx" not in pairs
    assert "pdf" not in pairs["md"]  # pdf needs LibreOffice
    assert "md" in pairs["docx"]
    assert "LibreOffice" in (LibreOfficeConverter().unavailable() or "")
    monkeypatch.setattr(pandoc, "pandoc_path", lambda: None)
    assert "pandoc" in (conv.unavailable() or "")
    assert conv.pairs() == {}


def test_isolation_can_be_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(process.ISOLATION_ENV, "require")
    monkeypatch.setattr(process, "isolation_available", lambda: False)
    assert "namespaces" in (PandocConverter().unavailable() or "")
    monkeypatch.setenv(process.ISOLATION_ENV, "auto")
    assert PandocConverter().unavailable() is None


def test_limits_leave_room_for_libreoffice() -> None:
    assert CONVERTER.limits.memory_bytes >= 3 * 1024**3


@pytest.mark.skipif(not process.isolation_available(), reason="no user namespaces here")
def test_isolated_tool_sees_no_host_files_and_no_network(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("hidden")
    share = tmp_path / "share"
    share.mkdir()
    (share / "mine.txt").write_text("visible")
    script = (
        f"cat {secret} 2>/dev/null || echo no-secret; cat {share}/mine.txt; echo; "
        "echo interfaces: $(tail -n +3 /proc/net/dev | cut -d: -f1)"
    )
    proc = process.run_isolated(
        ["/bin/sh", "-c", script], share=share, env={"PATH": "/usr/bin:/bin"},
        timeout=20, what="sh", isolate=True,
    )  # fmt: skip
    lines = proc.stdout.splitlines()
    assert lines[0] == "no-secret"
    assert lines[1] == "visible"
    assert lines[2].split() == ["interfaces:", "lo"]  # a network namespace of its own


# --------------------------------------------------------------------- the sandbox


@needs_office
async def test_through_the_sandbox(samples: dict[str, Path], tmp_path: Path) -> None:
    seen: list[float] = []

    async def progress(value: float) -> None:
        seen.append(value)

    result = await sandbox.run(
        "document", "docx", "pdf", {"pages": "1"}, [samples["docx"]], tmp_path / "job", progress
    )
    assert all(word in read_text(result.path, "pdf") for word in WORDS)
    assert seen and seen == sorted(seen) and seen[-1] == 1.0


@needs_office
async def test_too_little_memory_fails_cleanly(samples: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(SandboxError) as err:
        await sandbox.run(
            "document", "xlsx", "pdf", {}, [samples["xlsx"]], tmp_path / "job",
            limits=Limits(memory_bytes=350 * 1024**2),
        )  # fmt: skip
    assert err.value.message

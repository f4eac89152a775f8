"""The e-book converter: every listed pair once on generated books, decoded independently;
metadata and table-of-contents options; calibre's formats reported honestly."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import defusedxml.ElementTree as SafeET
import pytest
from test_document import TEXT_SAMPLES, make_task, progress_of, read_text, run_pandoc

from converters import office, pandoc, sandbox
from converters.base import ConversionError, Task
from converters.ebook import CalibreEbookConverter, EbookConverter

CONVERTER = EbookConverter()
WORDS = ("Quokka", "Zephyr")

pytestmark = pytest.mark.skipif(pandoc.unavailable() is not None, reason="no pandoc")


@pytest.fixture(scope="session")
def books(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("books")
    md = root / "book.md"
    md.write_text(TEXT_SAMPLES["md"], encoding="utf-8")
    out = {"md": md}
    for fmt in ("html", "txt"):
        out[fmt] = root / f"book.{fmt}"
        out[fmt].write_text(TEXT_SAMPLES[fmt], encoding="utf-8")
    for fmt in ("epub", "fb2", "docx", "odt"):
        out[fmt] = run_pandoc(md, root / f"book.{fmt}", "--metadata=title:The Quokka")
    return out


def run(task: Task) -> Path:
    CONVERTER.check(task)
    result = CONVERTER.convert(task)
    assert result.path.is_file() and result.path.parent == task.workdir
    return result.path


PAIRS = sorted((s, d) for s, ds in CONVERTER.pairs().items() for d in ds)


def test_pairs() -> None:
    pairs = CONVERTER.pairs()
    for src in ("epub", "fb2", "docx", "html", "md", "txt"):
        assert {"epub", "fb2", "docx", "html", "md", "txt"} - {src} <= pairs[src]
        assert ("pdf" in pairs[src]) == (office.unavailable() is None)
    assert not any({"mobi", "azw3"} & dsts for dsts in pairs.values())


@pytest.mark.slow  # 2-7 s a pair (PDF through LibreOffice)
@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=[f"{s}-{d}" for s, d in PAIRS])
def test_every_pair(src: str, dst: str, books: dict[str, Path], tmp_path: Path) -> None:
    task = make_task(books[src], src, dst, tmp_path, CONVERTER)
    out = run(task)
    text = read_text(out, dst)
    for word in WORDS:
        assert word in text, f"{word!r} missing from {src}->{dst}: {text[:300]!r}"
    seen = progress_of(task)
    assert seen[0] == 0.0 and seen[-1] == 1.0


def opf_metadata(epub: Path) -> dict[str, str]:
    with zipfile.ZipFile(epub) as zf:
        container = SafeET.fromstring(zf.read("META-INF/container.xml"))
        ns = {"c": "urn:oasis:names:tc:opendocument:xmlns:container"}
        rootfile = container.find(".//c:rootfile", ns)
        assert rootfile is not None
        opf = SafeET.fromstring(zf.read(rootfile.get("full-path", "")))
    dc = "{http://purl.org/dc/elements/1.1/}"
    return {el.tag.removeprefix(dc): (el.text or "") for el in opf.iter() if el.tag.startswith(dc)}


def test_title_and_author(books: dict[str, Path], tmp_path: Path) -> None:
    out = run(make_task(books["md"], "md", "epub", tmp_path, CONVERTER,
                        title="Island Winds", author="A. Marsupial"))  # fmt: skip
    meta = opf_metadata(out)
    assert meta["title"] == "Island Winds"
    assert meta["creator"] == "A. Marsupial"


def test_title_of_the_input_is_kept_by_default(books: dict[str, Path], tmp_path: Path) -> None:
    out = run(make_task(books["docx"], "docx", "epub", tmp_path, CONVERTER))
    assert opf_metadata(out)["title"] == "The Quokka"


def test_fb2_metadata(books: dict[str, Path], tmp_path: Path) -> None:
    out = run(make_task(books["md"], "md", "fb2", tmp_path, CONVERTER, title="Island Winds"))
    root = SafeET.fromstring(out.read_bytes())
    ns = "{http://www.gribuser.ru/xml/fictionbook/2.0}"
    assert root.findtext(f"{ns}description/{ns}title-info/{ns}book-title") == "Island Winds"


def test_table_of_contents(books: dict[str, Path], tmp_path: Path) -> None:
    out = run(make_task(books["md"], "md", "docx", tmp_path, CONVERTER, toc=True))
    with zipfile.ZipFile(out) as zf:
        assert b"TOC \\o" in zf.read("word/document.xml")


def test_one_book_per_job(books: dict[str, Path], tmp_path: Path) -> None:
    task = make_task(books["md"], "md", "epub", tmp_path, CONVERTER)
    task.inputs.append(task.inputs[0])
    with pytest.raises(ConversionError, match="one file"):
        CONVERTER.check(task)


def test_calibre_formats_are_reported_not_offered() -> None:
    calibre = CalibreEbookConverter()
    if shutil.which("ebook-convert"):
        assert calibre.unavailable() is None
        assert "mobi" in calibre.pairs()
    else:
        assert "ebook-convert" in (calibre.unavailable() or "")
        assert "mobi" in (calibre.unavailable() or "")
        assert calibre.pairs() == {}


async def test_through_the_sandbox(books: dict[str, Path], tmp_path: Path) -> None:
    result = await sandbox.run("ebook", "md", "epub", {"title": "Winds"}, [books["md"]], tmp_path / "job")
    assert opf_metadata(result.path)["title"] == "Winds"
    assert "Quokka" in read_text(result.path, "epub")

"""E-books through pandoc: epub, fb2, docx, html, md, txt (and pdf by way of LibreOffice).

calibre's formats (mobi, azw3) need its `ebook-convert`; `CalibreEbookConverter` offers
them only when that program is installed, and otherwise says so for `convertd doctor`.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from typing import Any, ClassVar

from converters.base import ConversionError, Converter, Limits, Option, Result, Task
from converters.filetypes.document import PDF_OPTIONS, check_page_range, check_pages_option, pandoc_route
from converters.tools import pandoc, process
from converters.tools.office import links as office_links
from converters.tools.office import soffice as office

EBOOK_INPUTS = frozenset({"epub", "fb2", "docx", "odt", "html", "md", "txt"})
EBOOK_OUTPUTS = frozenset({"epub", "fb2", "docx", "odt", "html", "md", "txt"})

CALIBRE_FORMATS = frozenset({"mobi", "azw3"})


class EbookConverter(Converter):
    filetype: ClassVar[str] = "ebook"
    engine: ClassVar[str] = "pandoc"
    uses_office: ClassVar[bool] = True  # its pdf goes through LibreOffice
    limits: ClassVar[Limits] = Limits(memory_bytes=office.MEMORY_BYTES, cpu_seconds=300, wall_seconds=600)

    def check_options(self, input_format: str, output_format: str, options: Mapping[str, Any]) -> None:
        check_pages_option(options)

    def unavailable(self) -> str | None:
        return pandoc.unavailable()

    def unavailable_formats(self) -> Mapping[str, str]:
        missing: dict[str, str | None] = dict.fromkeys(
            sorted(CALIBRE_FORMATS), CalibreEbookConverter().unavailable()
        )
        missing["pdf"] = office.unavailable()
        return {fmt: reason for fmt, reason in missing.items() if reason}

    def pairs(self) -> Mapping[str, frozenset[str]]:
        outputs = EBOOK_OUTPUTS | ({"pdf"} if office.unavailable() is None else set())
        return {src: frozenset(outputs - {src}) for src in EBOOK_INPUTS}

    def options(self, input_format: str, output_format: str) -> Mapping[str, Option]:
        opts: dict[str, Option] = {}
        if output_format in ("epub", "fb2", "docx", "odt", "html", "pdf"):
            opts["title"] = Option("string", "Book title (empty: the title the input carries)", default="")
            opts["author"] = Option("string", "Author (empty: the author the input carries)", default="")
            opts["toc"] = Option("boolean", "Add a table of contents", default=False)
        if "md" in (input_format, output_format):
            opts["markdown_flavor"] = Option(
                "string",
                "Markdown dialect: GitHub (gfm), CommonMark, pandoc's own, or strict",
                default="gfm" if output_format == "md" else "markdown",
                enum=pandoc.MARKDOWN_FLAVORS,
            )
        if output_format == "pdf":
            opts.update(PDF_OPTIONS)
        return opts

    def check(self, task: Task) -> None:
        if len(task.inputs) != 1:
            raise ConversionError(
                f"An e-book conversion takes one file, not {len(task.inputs)}.",
                hint="Send each book as its own job.",
            )
        check_page_range(task.options.get("pages", ""))
        office_links.check_input(task.inputs[0], task.input_format)

    def convert(self, task: Task) -> Result:
        metadata = {key: task.options[key] for key in ("title", "author") if task.options.get(key)}
        return pandoc_route(task, metadata)


class CalibreEbookConverter(Converter):
    """mobi and azw3 through calibre's ebook-convert, when it is installed.

    Not exercised on the development machine (calibre is not installed there).
    """

    filetype: ClassVar[str] = "ebook"
    engine: ClassVar[str] = "calibre"
    limits: ClassVar[Limits] = Limits(memory_bytes=3 * 1024**3, cpu_seconds=300)

    def unavailable(self) -> str | None:
        if shutil.which("ebook-convert") is None:
            return (
                "calibre's ebook-convert is not installed, so mobi and azw3 are not offered "
                "(Debian package calibre)"
            )
        return process.isolation_missing_but_required()

    def pairs(self) -> Mapping[str, frozenset[str]]:
        if shutil.which("ebook-convert") is None:
            return {}
        sources = CALIBRE_FORMATS | {"epub", "fb2", "docx", "html", "txt"}
        return {src: frozenset((CALIBRE_FORMATS | {"epub"}) - {src}) for src in sources}

    def check(self, task: Task) -> None:
        if len(task.inputs) != 1:
            raise ConversionError("An e-book conversion takes one file.")
        office_links.check_input(task.inputs[0], task.input_format)

    def convert(self, task: Task) -> Result:
        tool = shutil.which("ebook-convert")
        if tool is None:
            raise ConversionError("calibre is not installed on this server.")
        task.progress(0.0)
        run_dir = office.fresh_dir(task.workdir / "calibre-run")
        src = run_dir / f"input.{task.input_format}"
        office.stage(task.inputs[0], src)
        out = run_dir / f"output.{task.output_format}"
        proc = process.run_isolated(
            [tool, str(src), str(out)],
            share=run_dir,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(run_dir)},
            timeout=300,
            what="calibre",
        )
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise ConversionError(
                f"calibre could not convert this {task.input_format} file.",
                hint=re.sub(r"\s+", " ", tail[0])[:300] or None,
            )
        task.progress(1.0)
        return Result(office.deliver(out, task.workdir, task.inputs[0].stem))

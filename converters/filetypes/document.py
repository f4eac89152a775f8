"""Office documents, spreadsheets, presentations and text markup.

LibreOffice converts between office formats and to PDF; pandoc handles the text formats
(markdown, HTML, reStructuredText, org, LaTeX, plain text) and reads docx/odt/rtf/epub
for them. Text formats become PDF through pandoc -> docx -> LibreOffice, as no LaTeX
engine is installed. `DocumentConverter` offers whichever of the two engines is present.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from converters.base import ConversionError, Converter, Limits, Option, RequestError, Result, Task
from converters.tools import pandoc
from converters.tools.office import links as office_links
from converters.tools.office import soffice as office
from converters.tools.office.pages import has_page_object

# LibreOffice: application -> (formats it reads, formats it writes)
_LO_APPS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "writer": (
        frozenset({"docx", "doc", "odt", "rtf", "txt"}),
        frozenset({"pdf", "docx", "doc", "odt", "rtf", "txt", "html"}),
    ),
    "calc": (
        frozenset({"xlsx", "xls", "ods"}),
        frozenset({"pdf", "xlsx", "xls", "ods", "csv", "html"}),
    ),
    "impress": (
        frozenset({"pptx", "ppt", "odp"}),
        frozenset({"pdf", "pptx", "ppt", "odp"}),
    ),
}

# pandoc: what it reads here and what it writes (pdf by way of docx and LibreOffice)
PANDOC_INPUTS = frozenset({"md", "html", "rst", "org", "tex", "txt", "docx", "odt", "rtf", "epub"})
PANDOC_OUTPUTS = frozenset({"md", "html", "rst", "org", "tex", "txt", "docx", "odt", "rtf"})

PAGE_RANGE = re.compile(r"^\s*\d+\s*(-\s*\d*\s*)?(,\s*\d+\s*(-\s*\d*\s*)?)*$")

LIMITS = Limits(memory_bytes=office.MEMORY_BYTES, cpu_seconds=300, wall_seconds=600)


def _pages_option(what: str) -> Option:
    return Option(
        "string",
        f"{what} to keep, e.g. '1-3,5' or '2-' (empty: all)",
        default="",
    )


PDF_OPTIONS: dict[str, Option] = {
    "pages": _pages_option("Pages"),
    "pdf_a": Option("boolean", "Write PDF/A-2b (archival PDF)", default=False),
}


def check_page_range(spec: str) -> None:
    if spec and not PAGE_RANGE.match(spec):
        raise ConversionError(
            f"'{spec}' is not a page range.",
            hint="Write pages and ranges separated by commas, e.g. '1-3,5' or '4-'.",
        )


def check_pages_option(options: Mapping[str, Any]) -> None:
    """The page range's syntax, while the request is answered (Converter.check_options)."""
    try:
        check_page_range(str(options.get("pages") or ""))
    except ConversionError as exc:
        raise RequestError(exc.message, exc.hint or "", field="pages") from None


class LibreOfficeConverter(Converter):
    """docx, doc, odt, rtf, xlsx, xls, ods, pptx, ppt, odp -> pdf and office formats."""

    filetype: ClassVar[str] = "document"
    engine: ClassVar[str] = "libreoffice"
    uses_office: ClassVar[bool] = True
    limits: ClassVar[Limits] = LIMITS

    def unavailable(self) -> str | None:
        return office.unavailable()

    def pairs(self) -> Mapping[str, frozenset[str]]:
        out: dict[str, frozenset[str]] = {}
        for inputs, outputs in _LO_APPS.values():
            for src in inputs:
                out[src] = outputs - {src}
        return out

    def options(self, input_format: str, output_format: str) -> Mapping[str, Option]:
        if output_format == "pdf":
            label = "Slides" if office.APP_OF.get(input_format) == "impress" else "Pages"
            return {**PDF_OPTIONS, "pages": _pages_option(label)}
        if output_format == "csv":
            return {
                "sheet": Option("integer", "Sheet to export (1 = first)", 1, minimum=1),
                "delimiter": Option("string", "Field separator", ",", enum=(",", ";", "\t", "|")),
            }
        return {}

    def check(self, task: Task) -> None:
        _single_input(task)
        check_page_range(task.options.get("pages", ""))
        office_links.check_input(task.inputs[0], task.input_format)

    async def run_jailed(
        self,
        input_format: str,
        output_format: str,
        options: dict[str, Any],
        inputs: list[Path],
        workdir: Path,
        limits: Limits,
    ) -> Result | None:
        # the warm pool's jail runs the guard, LibreOffice and the page check: no child
        if len(inputs) != 1:
            return None
        check_page_range(options.get("pages", ""))
        filter_options = _filter_options(output_format, options)
        # the worker's side only: jobs' children never import the pool's machinery
        from converters.tools.office import direct as office_direct

        return await office_direct.convert(
            inputs[0], input_format, output_format, filter_options, workdir, limits
        )

    def convert(self, task: Task) -> Result:
        # no progress between 0 and 1: the worker saves none before a quarter of a second
        # (app/services/processing.py), by when the guard is long done and LibreOffice
        # reports nothing until it ends
        task.progress(0.0)
        src, _removed = office_links.guard_links(task.inputs[0], task.input_format, task.workdir)
        out = office.convert(
            src,
            task.input_format,
            task.output_format,
            task.workdir,
            filter_options=_filter_options(task.output_format, task.options),
        )
        if src != task.inputs[0]:
            src.unlink(missing_ok=True)  # the guarded copy
        if task.output_format == "pdf":
            _check_pdf(out, task.options.get("pages", ""))
        task.progress(1.0)
        return Result(office.deliver(out, task.workdir, task.inputs[0].stem))


class PandocConverter(Converter):
    """Text markup (md, html, rst, org, tex, txt) and docx/odt/rtf/epub through pandoc."""

    filetype: ClassVar[str] = "document"
    engine: ClassVar[str] = "pandoc"
    uses_office: ClassVar[bool] = True
    limits: ClassVar[Limits] = LIMITS

    def unavailable(self) -> str | None:
        return pandoc.unavailable()

    def pairs(self) -> Mapping[str, frozenset[str]]:
        outputs = PANDOC_OUTPUTS | ({"pdf"} if office.unavailable() is None else set())
        return {src: frozenset(outputs - {src}) for src in PANDOC_INPUTS}

    def options(self, input_format: str, output_format: str) -> Mapping[str, Option]:
        opts: dict[str, Option] = {}
        if "md" in (input_format, output_format):
            side = "written" if output_format == "md" else "read"
            opts["markdown_flavor"] = Option(
                "string",
                f"Markdown dialect {side}: GitHub (gfm), CommonMark, pandoc's own, or strict",
                default="gfm" if output_format == "md" else "markdown",
                enum=pandoc.MARKDOWN_FLAVORS,
            )
        if output_format in ("html", "docx", "odt", "rtf", "tex", "md", "rst", "org", "pdf"):
            opts["toc"] = Option("boolean", "Add a table of contents", default=False)
        if output_format == "pdf":
            opts.update(PDF_OPTIONS)
        return opts

    def check(self, task: Task) -> None:
        _single_input(task)
        check_page_range(task.options.get("pages", ""))

    def convert(self, task: Task) -> Result:
        return pandoc_route(task)


class DocumentConverter(Converter):
    """LibreOffice for office formats, pandoc for text formats, whichever is installed."""

    filetype: ClassVar[str] = "document"
    engine: ClassVar[str] = "libreoffice+pandoc"
    uses_office: ClassVar[bool] = True
    limits: ClassVar[Limits] = LIMITS

    def check_options(self, input_format: str, output_format: str, options: Mapping[str, Any]) -> None:
        check_pages_option(options)

    def __init__(self) -> None:
        self.office = LibreOfficeConverter()
        self.pandoc = PandocConverter()

    def _engines(self) -> list[Converter]:
        # LibreOffice first: it keeps the layout of office documents
        return [c for c in (self.office, self.pandoc) if c.unavailable() is None]

    def unavailable(self) -> str | None:
        if self._engines():
            return None
        return f"{self.office.unavailable()}; {self.pandoc.unavailable()}"

    def unavailable_formats(self) -> Mapping[str, str]:
        """Formats one missing engine takes away while the other still runs (for doctor)."""
        engines = self._engines()
        if not engines:
            return {}  # the whole converter is reported by unavailable()
        offered = set(self.pairs())
        for dsts in self.pairs().values():
            offered |= dsts
        missing: dict[str, str] = {}
        for engine in (self.office, self.pandoc):
            reason = engine.unavailable()
            if reason is None:
                continue
            for src, dsts in engine.pairs().items():
                for fmt in {src, *dsts} - offered:
                    missing[fmt] = reason
        return dict(sorted(missing.items()))

    def pairs(self) -> Mapping[str, frozenset[str]]:
        out: dict[str, frozenset[str]] = {}
        for engine in reversed(self._engines()):
            for src, dsts in engine.pairs().items():
                out[src] = out.get(src, frozenset()) | dsts
        return out

    def engine_for(self, input_format: str, output_format: str) -> Converter:
        # one engine at a time, LibreOffice first: asking pandoc whether it is installed
        # runs `pandoc --version` several times (pypandoc's probe), ~8 ms of CPU in every
        # job's process, which an office job that LibreOffice converts never needs
        for engine in (self.office, self.pandoc):
            if output_format in engine.pairs().get(input_format, ()) and engine.unavailable() is None:
                return engine
        raise ConversionError(f"No engine here turns {input_format} into {output_format}.")

    def options(self, input_format: str, output_format: str) -> Mapping[str, Option]:
        return self.engine_for(input_format, output_format).options(input_format, output_format)

    def check(self, task: Task) -> None:
        self.engine_for(task.input_format, task.output_format).check(task)

    def convert(self, task: Task) -> Result:
        return self.engine_for(task.input_format, task.output_format).convert(task)

    async def run_jailed(
        self,
        input_format: str,
        output_format: str,
        options: dict[str, Any],
        inputs: list[Path],
        workdir: Path,
        limits: Limits,
    ) -> Result | None:
        engine = self.engine_for(input_format, output_format)
        return await engine.run_jailed(input_format, output_format, options, inputs, workdir, limits)


def pandoc_route(task: Task, metadata: Mapping[str, str] | None = None) -> Result:
    """pandoc to the target, or to docx and then LibreOffice when the target is pdf
    (no LaTeX engine is installed)."""
    task.progress(0.0)
    to_pdf = task.output_format == "pdf"
    out = pandoc.convert(
        task.inputs[0],
        task.input_format,
        "docx" if to_pdf else task.output_format,
        task.workdir,
        markdown_flavor=task.options.get("markdown_flavor"),
        toc=bool(task.options.get("toc")),
        metadata=metadata,
    )
    if to_pdf:
        task.progress(0.5)
        out = docx_to_pdf(out, task.workdir, task.options)
    task.progress(1.0)
    return Result(office.deliver(out, task.workdir, task.inputs[0].stem))


def docx_to_pdf(docx: Path, workdir: Path, options: Mapping[str, object]) -> Path:
    """PDF of a docx that pandoc wrote (guarded all the same), with the pdf options."""
    pages = str(options.get("pages") or "")
    src, _removed = office_links.guard_links(docx, "docx", docx.parent)
    out = office.convert(
        src,
        "docx",
        "pdf",
        workdir,
        filter_options=office.pdf_filter_options(pages, bool(options.get("pdf_a"))),
    )
    for intermediate in {docx, src}:
        intermediate.unlink(missing_ok=True)
    _check_pdf(out, pages)
    return out


def _filter_options(output_format: str, options: Mapping[str, Any]) -> str:
    if output_format == "pdf":
        return office.pdf_filter_options(options.get("pages", ""), bool(options.get("pdf_a")))
    if output_format == "csv":
        return office.csv_filter_options(options.get("delimiter", ","), int(options.get("sheet", 1)))
    return ""


def _check_pdf(path: Path, pages: str) -> None:
    if has_page_object(path):
        return
    import pypdfium2  # the rare case: let a real PDF reader decide

    try:
        doc = pypdfium2.PdfDocument(path)
    except pypdfium2.PdfiumError:
        count = 0  # not even a readable PDF: as good as empty to whoever downloads it
    else:
        try:
            count = len(doc)
        finally:
            doc.close()
    if count == 0:
        raise ConversionError(
            "The PDF came out empty.",
            hint=f"Check the page range '{pages}' against the document's length."
            if pages
            else "The document may have no printable content.",
        )


def _single_input(task: Task) -> None:
    if len(task.inputs) != 1:
        raise ConversionError(
            f"A document conversion takes one file, not {len(task.inputs)}.",
            hint="Send each document as its own job.",
        )

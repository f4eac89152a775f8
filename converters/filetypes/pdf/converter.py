"""PDF pages to images or text, PDF merge/split/compress, images to PDF.

pypdfium2 (PDFium) renders and extracts text, pikepdf (qpdf) does the page work
(converters.filetypes.pdf.edit), img2pdf wraps images into PDF pages without re-encoding them; all
three are under permissive licences (see docs/decisions.md). Sizes are checked before
anything is rendered: the page count, and each page's declared size times the requested
dpi against a pixel limit (a 200-inch page at 600 dpi would need 14 billion pixels).
Nothing embedded in a PDF is ever opened or run: PDFium is built without JavaScript and
neither follows /Launch or /URI actions nor reads external streams, qpdf only copies
objects, and we never touch embedded files.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, ClassVar

import img2pdf
import pikepdf
import pypdfium2 as pdfium
from PIL import Image, UnidentifiedImageError

from converters.base import ConversionError, Converter, Limits, Option, RequestError, Result, Task, said
from converters.filetypes.pdf import edit as pdf_edit
from converters.filetypes.pdf import forms as pdf_forms

RENDER_FORMATS = frozenset({"png", "jpg", "webp"})
IMAGE_INPUTS = frozenset({"jpg", "png", "webp", "tiff", "gif", "bmp"})

MAX_PAGES = 5_000  # pages in one input or in a merged result
MAX_RENDER_PAGES = 500
MAX_PAGE_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold
MAX_TOTAL_PIXELS = 2_500_000_000  # over all rendered pages of one job
MAX_IMAGES = 1_000
# zlib level of rendered pages: Pillow's default 6 costs ~50% more CPU than 3 and gives
# larger files on rendered pages with photos (its filter choice changes above 3);
# 3 beats PyMuPDF's own encoder in time for ~9% larger files (bench/pdf.py)
PNG_LEVEL = 3

PAGES_OPTION = Option(
    "string",
    "Pages to use, in this order: e.g. '1-3,5' or '4-' (empty: all)",
    default="",
)
_PAGE_PART = re.compile(r"^\s*(\d+)\s*(?:(-)\s*(\d*)\s*)?$")


def parse_pages(spec: str, count: int) -> list[int]:
    """0-based page indexes of a spec like '1-3,5,8-'; every page when spec is empty."""
    if not spec.strip():
        return list(range(count))
    pages: list[int] = []
    for part in spec.split(","):
        match = _PAGE_PART.match(part)
        if match is None:
            raise ConversionError(
                f"'{spec}' is not a page range.",
                hint="Write pages and ranges separated by commas, e.g. '1-3,5' or '4-'.",
            )
        first = int(match.group(1))
        last = (int(match.group(3)) if match.group(3) else count) if match.group(2) else first
        for page in (first, last):
            if page < 1 or page > count:
                raise ConversionError(
                    f"Page {page} does not exist: the PDF has {count} page(s).",
                    hint=f"Choose pages from 1 to {count}.",
                )
        step = 1 if last >= first else -1
        pages.extend(p - 1 for p in range(first, last + step, step))
    if len(pages) > MAX_PAGES:
        raise ConversionError(f"The page selection names {len(pages)} pages, over {MAX_PAGES}.")
    return pages


class PdfConverter(Converter):
    filetype: ClassVar[str] = "pdf"
    engine: ClassVar[str] = "pdfium"
    multi_input: ClassVar[bool] = True
    limits: ClassVar[Limits] = Limits(memory_bytes=2 * 1024**3, cpu_seconds=600, wall_seconds=900)

    def check_options(self, input_format: str, output_format: str, options: Mapping[str, Any]) -> None:
        spec = str(options.get("pages") or "")
        if spec.strip() and not all(_PAGE_PART.match(part) for part in spec.split(",")):
            raise RequestError(
                f"'{spec}' is not a page range.",
                "Write pages and ranges separated by commas, e.g. '1-3,5' or '4-'.",
                field="pages",
            )

    def pairs(self) -> Mapping[str, frozenset[str]]:
        out = {"pdf": RENDER_FORMATS | {"txt", "pdf", "zip"}}
        out.update({fmt: frozenset({"pdf"}) for fmt in IMAGE_INPUTS})
        return out

    def options(self, input_format: str, output_format: str) -> Mapping[str, Option]:
        if input_format != "pdf":
            return {
                "page_size": Option(
                    "string",
                    "Page size: the image's own size, or the image fitted into A4 or Letter",
                    default="image",
                    enum=("image", "a4", "letter"),
                ),
            }
        if output_format in RENDER_FORMATS:
            opts = {
                "pages": PAGES_OPTION,
                "dpi": Option("integer", "Resolution of the rendered pages", 150, 36, 600),
            }
            if output_format != "png":
                opts["quality"] = Option("integer", "Image quality", 85, 1, 100)
            return opts
        if output_format == "pdf":
            return {
                "pages": PAGES_OPTION,
                "compress": Option(
                    "boolean",
                    "Compress: drop unused objects and resources, deflate streams, pack objects "
                    "into object streams",
                    default=False,
                ),
                "image_dpi": Option(
                    "integer",
                    "With compress: downsample images above this resolution (0 keeps them)",
                    default=0,
                    minimum=0,
                    maximum=600,
                ),
                "image_quality": Option("integer", "With compress and image_dpi: JPEG quality", 75, 10, 100),
            }
        # txt, zip (split into one PDF per page)
        return {"pages": PAGES_OPTION}

    # ------------------------------------------------------------------ checks

    def check(self, task: Task) -> None:
        if not task.inputs:
            raise ConversionError("No file was given.")
        if len(task.inputs) > 1 and task.output_format != "pdf":
            raise ConversionError(
                f"Only PDF output takes several files (it merges them); {task.output_format} takes one.",
                hint="Merge the files into one PDF first, or send one job per file.",
            )
        if len(task.inputs) > MAX_IMAGES:
            raise ConversionError(f"{len(task.inputs)} files is over the limit of {MAX_IMAGES}.")
        total_pages = 0
        for path in task.inputs:
            if _is_pdf(path):
                with _open_pdf(path) as doc:
                    total_pages += len(doc)
                    if task.output_format in RENDER_FORMATS:
                        pages = parse_pages(task.options.get("pages", ""), len(doc))
                        _check_render_size(doc, pages, int(task.options.get("dpi", 150)))
                if task.output_format in RENDER_FORMATS or task.output_format == "txt":
                    pdf_forms.check_form_nesting(path)  # before PDFium loads any page
            else:
                _check_image(path)
                total_pages += 1
            if total_pages > MAX_PAGES:
                raise ConversionError(
                    f"The PDF has more than {MAX_PAGES} pages.",
                    hint="Split it into smaller documents first.",
                )

    # ----------------------------------------------------------------- convert

    def convert(self, task: Task) -> Result:
        out_fmt = task.output_format
        if out_fmt == "pdf":
            return self._to_pdf(task)
        if out_fmt == "zip":
            with pdf_edit.open_pdf(task.inputs[0]) as doc:
                return _split(doc, parse_pages(task.options.get("pages", ""), len(doc.pages)), task)
        with _open_pdf(task.inputs[0], forms=out_fmt in RENDER_FORMATS) as doc:
            pages = parse_pages(task.options.get("pages", ""), len(doc))
            if out_fmt in RENDER_FORMATS:
                return _render(doc, pages, task)
            return _text(doc, pages, task)

    def _to_pdf(self, task: Task) -> Result:
        out = _output_path(task, "pdf")
        with ExitStack() as stack:
            if len(task.inputs) == 1 and _is_pdf(task.inputs[0]):
                # the document itself: bookmarks, forms and metadata stay as they are
                doc = stack.enter_context(pdf_edit.open_pdf(task.inputs[0]))
            else:
                sources = []
                for n, path in enumerate(task.inputs):
                    source = path if _is_pdf(path) else _image_pdf(path, task)
                    sources.append(stack.enter_context(pdf_edit.open_pdf(source)))
                    task.progress(0.4 * (n + 1) / len(task.inputs))
                doc = stack.enter_context(
                    pdf_edit.merge(sources, lambda n: task.progress(0.4 + 0.4 * n / len(sources)))
                )
            if task.options.get("pages"):
                pdf_edit.keep_pages(doc, parse_pages(task.options["pages"], len(doc.pages)))
            pdf_edit.save(doc, out, task.options)
        task.progress(1.0)
        return Result(out)


# ---------------------------------------------------------------------- helpers


def _is_pdf(path: Path) -> bool:
    with path.open("rb") as fh:
        return b"%PDF-" in fh.read(1024)


@contextmanager
def _open_pdf(path: Path, forms: bool = False) -> Iterator[pdfium.PdfDocument]:
    """Open for rendering (`forms`: with form fields drawn) and text; refuse damaged and
    password-protected files."""
    try:
        doc = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        if exc.err_code == pdfium.raw.FPDF_ERR_PASSWORD:
            raise ConversionError(
                "This PDF is password-protected.",
                hint="Remove the password (print to PDF, or save without encryption) and retry.",
            ) from None
        raise ConversionError(
            "This PDF cannot be read.", hint=f"It may be damaged or not a PDF ({exc})."
        ) from None
    try:
        if forms:  # draw form fields as viewers do; this PDFium has no JavaScript to run
            doc.init_forms()
        yield doc
    finally:
        doc.close()


def _check_render_size(doc: pdfium.PdfDocument, pages: list[int], dpi: int) -> None:
    if len(pages) > MAX_RENDER_PAGES:
        raise ConversionError(
            f"{len(pages)} pages to render is over the limit of {MAX_RENDER_PAGES}.",
            hint="Choose fewer pages with the 'pages' option.",
        )
    total = 0.0
    scale = dpi / 72
    for index in pages:
        # declared size (crop box, turned by /Rotate), read without loading the page
        page_w, page_h = doc.get_page_size(index)
        width, height = page_w * scale, page_h * scale
        pixels = width * height
        if pixels > MAX_PAGE_PIXELS:
            raise ConversionError(
                f"Page {index + 1} is {page_w / 72:.0f}x{page_h / 72:.0f} inches: "
                f"at {dpi} dpi that is {pixels / 1e6:,.0f} million pixels, over the "
                f"{MAX_PAGE_PIXELS / 1e6:.0f} million pixel limit.",
                hint="Lower the 'dpi' option.",
            )
        total += pixels
    if total > MAX_TOTAL_PIXELS:
        raise ConversionError(
            f"Rendering these pages at {dpi} dpi needs {total / 1e9:.1f} billion pixels, over "
            f"the {MAX_TOTAL_PIXELS / 1e9:.1f} billion limit of one job.",
            hint="Lower the 'dpi' option or choose fewer pages.",
        )


def _check_image(path: Path) -> None:
    try:
        with Image.open(path) as img:  # reads the header only
            width, height = img.size
    except Image.DecompressionBombError as exc:
        raise ConversionError(
            f"The image declares too many pixels: {exc}",
            hint="Scale the image down first.",
        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        if path.suffix.lower() == ".pdf":  # sent as a PDF, without a PDF's marker: say so
            raise ConversionError(
                "This PDF cannot be read.", hint="It may be damaged or not a PDF (it has no %PDF- header)."
            ) from None
        raise ConversionError(
            "This image cannot be read.", hint=f"It may be damaged or of another type ({said(exc, path)})."
        ) from None
    if width * height > MAX_PAGE_PIXELS:
        raise ConversionError(
            f"The image declares {width}x{height} pixels, over the "
            f"{MAX_PAGE_PIXELS / 1e6:.0f} million pixel limit.",
            hint="Scale the image down first.",
        )


def _output_path(task: Task, ext: str) -> Path:
    stem = task.inputs[0].stem or "output"
    path = task.workdir / f"{stem}.{ext}"
    return path if path not in task.inputs else task.workdir / f"{stem}-converted.{ext}"


def _render(doc: pdfium.PdfDocument, pages: list[int], task: Task) -> Result:
    fmt = task.output_format
    dpi = int(task.options.get("dpi", 150))
    quality = int(task.options.get("quality", 85))

    def image(index: int) -> bytes:
        page = doc[index]
        try:
            # RGB in PIL's byte order, no alpha: white page under transparent content
            bitmap = page.render(scale=dpi / 72, may_draw_forms=True, rev_byteorder=True)
            img = bitmap.to_pil()
        finally:
            page.close()
        buf = io.BytesIO()
        if fmt == "png":
            img.save(buf, "PNG", compress_level=PNG_LEVEL)
        else:
            img.save(buf, "JPEG" if fmt == "jpg" else "WEBP", quality=quality)
        return buf.getvalue()

    if len(pages) == 1:
        out = _output_path(task, fmt)
        out.write_bytes(image(pages[0]))
        task.progress(1.0)
        return Result(out)
    out = _output_path(task, "zip")
    width = max(3, len(str(max(pages) + 1)))
    names: list[str] = []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:  # images are compressed already
        for n, index in enumerate(pages):
            name = f"page-{index + 1:0{width}d}.{fmt}"
            if name in names:  # the same page asked twice
                name = f"page-{index + 1:0{width}d}-{n + 1}.{fmt}"
            zf.writestr(name, image(index))
            names.append(name)
            task.progress((n + 1) / len(pages))
    return Result(out, names)


def _text(doc: pdfium.PdfDocument, pages: list[int], task: Task) -> Result:
    out = _output_path(task, "txt")
    with out.open("w", encoding="utf-8") as fh:
        for n, index in enumerate(pages):
            if n:
                fh.write("\f")  # page break, as pdftotext writes it
            page = doc[index]
            try:
                textpage = page.get_textpage()
                text = textpage.get_text_bounded()  # whole page, full Unicode
                textpage.close()
            finally:
                page.close()
            fh.write(text.replace("\r\n", "\n").replace("\r", "\n"))
            if text and not text.endswith(("\n", "\r")):
                fh.write("\n")
            task.progress((n + 1) / len(pages))
    return Result(out)


def _split(doc: pikepdf.Pdf, pages: list[int], task: Task) -> Result:
    out = _output_path(task, "zip")
    width = max(3, len(str(max(pages) + 1)))
    names: list[str] = []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, index in enumerate(pages):
            name = f"page-{index + 1:0{width}d}.pdf"
            if name in names:
                name = f"page-{index + 1:0{width}d}-{n + 1}.pdf"
            zf.writestr(name, pdf_edit.single_page(doc, index))
            names.append(name)
            task.progress((n + 1) / len(pages))
    return Result(out, names)


def _image_pdf(path: Path, task: Task) -> bytes:
    """One image as PDF bytes via img2pdf.

    JPEG goes in as it is (no recompression); anything else is first flattened by Pillow
    onto white into an RGB PNG, because img2pdf refuses alpha channels and some modes.
    """
    _check_image(path)
    with Image.open(path) as img:
        if img.format == "JPEG":
            source = path
        else:
            img.seek(0)
            rgba = img.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            source = task.workdir / f"flat-{len(list(task.workdir.glob('flat-*')))}.png"
            dpi = img.info.get("dpi")
            flat.save(source, "PNG", **({"dpi": dpi} if dpi else {}))
    kwargs: dict[str, object] = {"rotation": img2pdf.Rotation.ifvalid}
    size = task.options.get("page_size", "image")
    if size != "image":
        mm = (210.0, 297.0) if size == "a4" else (215.9, 279.4)
        kwargs["layout_fun"] = img2pdf.get_layout_fun(
            pagesize=(img2pdf.mm_to_pt(mm[0]), img2pdf.mm_to_pt(mm[1])),
            fit=img2pdf.FitMode.into,
            auto_orient=True,
        )
    try:
        pdf: bytes = img2pdf.convert(str(source), **kwargs)
        return pdf
    except (img2pdf.ImageOpenError, img2pdf.AlphaChannelError, ValueError, OSError) as exc:
        raise ConversionError("This image cannot be placed in a PDF.", hint=f"img2pdf said: {exc}") from None

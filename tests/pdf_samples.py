"""PDFs for the tests, written object by object with pikepdf, and read back with PDFium.

The converter renders with PDFium and edits with qpdf; the files here are built by hand
(content streams, fonts, actions, encryption) so that a test does not check the converter's
libraries against themselves more than it must.
"""

from __future__ import annotations

import io
from pathlib import Path

import pikepdf
import pypdfium2 as pdfium
from PIL import Image

Color = tuple[float, float, float]
PAGE_COLORS: list[Color] = [(1, 0, 0), (0, 0.6, 0), (0, 0, 1), (1, 0.5, 0)]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _helvetica(pdf: pikepdf.Pdf) -> pikepdf.Object:
    font = pikepdf.Dictionary(
        Type=pikepdf.Name.Font,
        Subtype=pikepdf.Name.Type1,
        BaseFont=pikepdf.Name.Helvetica,
        Encoding=pikepdf.Name.WinAnsiEncoding,
    )
    return pdf.make_indirect(font)


def add_page(
    pdf: pikepdf.Pdf,
    size: tuple[float, float] = (300, 400),
    text: str | None = None,
    fill: Color | None = None,
    fontsize: float = 14,
) -> pikepdf.Page:
    """A page with an optional filled rectangle (20 pt margin, 60 pt at the top) and a line
    of Helvetica at (20, 40) from the top-left corner."""
    width, height = size
    ops = []
    if fill is not None:
        ops.append(f"q {fill[0]} {fill[1]} {fill[2]} rg 20 20 {width - 40} {height - 80} re f Q")
    if text is not None:
        ops.append(f"BT /F1 {fontsize} Tf 20 {height - 40} Td ({_escape(text)}) Tj ET")
    content = pdf.make_stream("\n".join(ops).encode("latin-1"))
    page = pikepdf.Dictionary(
        Type=pikepdf.Name.Page,
        MediaBox=[0, 0, width, height],
        Resources=pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=_helvetica(pdf))),
        Contents=content,
    )
    pdf.pages.append(pikepdf.Page(page))
    return pdf.pages[-1]


def make_pdf(path: Path, pages: int = 3, size: tuple[float, float] = (300, 400), label: str = "Page") -> Path:
    """Page n says '<label> n Quokka' over a large rectangle of its own colour."""
    with pikepdf.new() as pdf:
        for n in range(pages):
            add_page(pdf, size, f"{label} {n + 1} Quokka", PAGE_COLORS[n % len(PAGE_COLORS)])
        pdf.save(path)
    return path


def pdf_bytes(pages: int, label: str) -> bytes:
    """Page n says '<label> page n' (no colour)."""
    with pikepdf.new() as pdf:
        for n in range(pages):
            add_page(pdf, (612, 792), f"{label} page {n + 1}")
        buf = io.BytesIO()
        pdf.save(buf)
        return buf.getvalue()


def image_pdf(path: Path, jpeg: bytes, pixels: tuple[int, int], box: float, text: str = "Quokka") -> Path:
    """A 300x300 pt page drawing a JPEG `box` pt square at its bottom-left corner, and text."""
    with pikepdf.new() as pdf:
        page = add_page(pdf, (300, 300), text)
        image = pdf.make_stream(
            jpeg, Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image, Width=pixels[0],
            Height=pixels[1], ColorSpace=pikepdf.Name.DeviceRGB, BitsPerComponent=8,
            Filter=pikepdf.Name.DCTDecode,
        )  # fmt: skip
        page.obj.Resources.XObject = pikepdf.Dictionary(Im1=image)
        page.contents_add(pdf.make_stream(f"q {box} 0 0 {box} 0 0 cm /Im1 Do Q".encode()), prepend=False)
        pdf.save(path)
    return path


# ---------------------------------------------------------------------- reading


def page_count(source: Path | bytes) -> int:
    doc = pdfium.PdfDocument(source)
    try:
        return len(doc)
    finally:
        doc.close()


def page_texts(source: Path | bytes) -> list[str]:
    doc = pdfium.PdfDocument(source)
    try:
        texts = []
        for page in doc:
            textpage = page.get_textpage()
            texts.append(textpage.get_text_bounded().replace("\r\n", "\n").strip())
            textpage.close()
            page.close()
        return texts
    finally:
        doc.close()


def page_sizes(source: Path | bytes) -> list[tuple[float, float]]:
    doc = pdfium.PdfDocument(source)
    try:
        return [doc.get_page_size(i) for i in range(len(doc))]
    finally:
        doc.close()


def render(source: Path | bytes, index: int, dpi: float = 72) -> Image.Image:
    doc = pdfium.PdfDocument(source)
    try:
        page = doc[index]
        img = page.render(scale=dpi / 72, rev_byteorder=True).to_pil().convert("RGB")
        page.close()
        return img
    finally:
        doc.close()


def embedded_images(source: Path | bytes) -> list[Image.Image]:
    """Every image XObject of every page, decoded by pikepdf."""
    found = []
    with pikepdf.open(io.BytesIO(source) if isinstance(source, bytes) else source) as pdf:
        for page in pdf.pages:
            for image in page.get_images().values():
                found.append(pikepdf.PdfImage(image).as_pil_image())
    return found

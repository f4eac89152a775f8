"""Page work on PDFs with pikepdf (qpdf): merge, select and reorder, split, compress.

pikepdf (MPL-2.0, qpdf Apache-2.0) is already here as img2pdf's dependency and copies
pages between documents with everything they reference; it writes only reachable objects,
so unused objects are dropped on every save. It never opens external streams (/F) or
runs actions: a PDF is data to it.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pikepdf
from PIL import Image

from converters.base import ConversionError
from converters.pdf_images import PlacedImage, placed_images


def open_pdf(source: Path | bytes) -> pikepdf.Pdf:
    """Open for page work; refuse damaged and password-protected files with our message."""
    try:
        return pikepdf.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except pikepdf.PasswordError:
        raise ConversionError(
            "This PDF is password-protected.",
            hint="Remove the password (print to PDF, or save without encryption) and retry.",
        ) from None
    except (pikepdf.PdfError, ValueError, OSError) as exc:
        raise ConversionError(
            "This PDF cannot be read.", hint=f"It may be damaged or not a PDF ({exc})."
        ) from None


def keep_pages(pdf: pikepdf.Pdf, indexes: list[int]) -> None:
    """Keep only these 0-based pages, in this order, in place, so outlines, forms and
    metadata of the document stay. A page asked twice is appended twice: pikepdf then
    adds a copy of the page dictionary (a page tree may not hold one object twice)."""
    pages = list(pdf.pages)
    wanted = [pages[i] for i in indexes]
    for _ in range(len(pages)):
        del pdf.pages[-1]
    for page in wanted:
        pdf.pages.append(page)


def merge(sources: Iterable[pikepdf.Pdf], progress: Callable[[int], None]) -> pikepdf.Pdf:
    """A new document with every page of every source, in order."""
    out = pikepdf.new()
    for n, src in enumerate(sources):
        out.pages.extend(src.pages)
        progress(n + 1)
    return out


def save(pdf: pikepdf.Pdf, out: Path | io.BytesIO, options: Mapping[str, object]) -> None:
    if options.get("compress"):
        _compress(pdf, options)
        pdf.save(out, compress_streams=True, recompress_flate=True,
                 object_stream_mode=pikepdf.ObjectStreamMode.generate)  # fmt: skip
    else:
        pdf.save(out, compress_streams=True)


def single_page(pdf: pikepdf.Pdf, index: int) -> bytes:
    part = pikepdf.new()
    part.pages.append(pdf.pages[index])
    buf = io.BytesIO()
    part.save(buf, compress_streams=True)
    return buf.getvalue()


# ------------------------------------------------------------------------ compress


def _compress(pdf: pikepdf.Pdf, options: Mapping[str, object]) -> None:
    pdf.remove_unreferenced_resources()
    dpi = int(str(options.get("image_dpi") or 0))  # (an integer, validated by the registry)
    if dpi:
        quality = int(str(options.get("image_quality") or 75))
        for placed in placed_images(pdf).values():
            if placed.dpi > dpi + 1:
                _downsample(placed, dpi, quality)


def _downsample(placed: PlacedImage, dpi: int, quality: int) -> None:
    """Re-encode one image as JPEG at `dpi` for its largest placement; an image we cannot
    decode safely (masks, unusual colour spaces or decode arrays) stays as it is."""
    stream = placed.stream
    if stream.get("/ImageMask") or "/Decode" in stream or "/Mask" in stream:
        return
    try:
        img = pikepdf.PdfImage(stream).as_pil_image()
    except (pikepdf.PdfError, NotImplementedError, ValueError, OSError):
        return
    if img.mode not in ("L", "RGB"):
        return
    scale = dpi / placed.dpi
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    small = img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=quality, optimize=True)
    if buf.tell() >= len(stream.read_raw_bytes()):
        return  # no gain
    stream.write(buf.getvalue(), filter=pikepdf.Name.DCTDecode)
    stream.Width, stream.Height = size
    stream.ColorSpace = pikepdf.Name.DeviceGray if small.mode == "L" else pikepdf.Name.DeviceRGB
    stream.BitsPerComponent = 8
    for key in ("/DecodeParms", "/Intent"):
        if key in stream:
            del stream[key]

"""SVG input: links to other files removed, its size worked out, rendered by resvg.

`svg_sanitize` parses with defusedxml and drops every reference that leaves the document;
`svg_measure` gives the size it renders at (checked against the pixel limit before
rendering); `svg_render` renders it with the deployment's fonts.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from converters.filetypes.image.sizes import check_pixels, target_size

try:  # SVG input
    import resvg_py

    HAVE_RESVG = True
except ImportError:  # pragma: no cover
    HAVE_RESVG = False
from PIL import Image

from converters.base import ConversionError
from converters.tools import fonts

SVG_FONT = "DejaVu Sans"  # without a font family resvg silently drops all text
SVG_UNKNOWN_SIDE = 1024  # render size of an SVG that declares no size and no viewBox
_SVG_UNITS = {
    "": 1.0,
    "px": 1.0,
    "in": 96.0,
    "cm": 96 / 2.54,
    "mm": 96 / 25.4,
    "pt": 4 / 3,
    "pc": 16.0,
    "em": 16.0,
    "ex": 8.0,
}
_XLINK = "{http://www.w3.org/1999/xlink}href"
_SAFE_DATA = (
    "data:image/png",
    "data:image/jpeg",
    "data:image/jpg",
    "data:image/gif",
    "data:image/webp",
)


def svg_sanitize(data: bytes) -> tuple[str, Any]:
    """Parse safely (no entities, no external DTD) and drop links to anything outside.

    resvg would load `<image href="/any/local/file.png">` (or another SVG that does the
    same) into the output; only in-document references (#id) and embedded raster images
    (data:image/png and the like) survive. Returns the clean text and the root element.
    """
    import xml.etree.ElementTree as ET

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    try:
        root = fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise ConversionError(
            "The SVG declares XML entities or external resources, which are not allowed.",
            "Remove the DOCTYPE's entity declarations and send it again.",
        ) from exc
    except ET.ParseError as exc:
        line, column = exc.position
        raise ConversionError(
            f"The file is not valid SVG: XML error at line {line}, column {column}.",
            "Check that the file is a complete SVG document.",
        ) from exc
    if not root.tag.endswith("svg"):
        raise ConversionError("The file is XML but not SVG.", "Send an SVG image.")
    for el in root.iter():
        for attr in ("href", _XLINK):
            value = el.get(attr)
            if value is None:
                continue
            value = value.strip()
            if not (value.startswith("#") or value.lower().startswith(_SAFE_DATA)):
                del el.attrib[attr]
    return ET.tostring(root, encoding="unicode"), root


def _svg_length(value: str | None, reference: float | None) -> float | None:
    if not value:
        return None
    value = value.strip().lower()
    try:
        if value.endswith("%"):
            return None if reference is None else float(value[:-1]) * reference / 100
        number = value.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = value[len(number) :]
        return float(number) * _SVG_UNITS[unit] if unit in _SVG_UNITS else None
    except ValueError:
        return None


def svg_intrinsic(root: Any) -> tuple[float, float] | None:
    """The size resvg would give the drawing, from width, height and viewBox."""
    box: list[float] | None = None
    with contextlib.suppress(ValueError):
        parts = [float(p) for p in root.get("viewBox", "").replace(",", " ").split()]
        if len(parts) == 4 and parts[2] > 0 and parts[3] > 0:
            box = parts
    width = _svg_length(root.get("width"), box[2] if box else None)
    height = _svg_length(root.get("height"), box[3] if box else None)
    if box:
        if width is None and height is None:
            width, height = box[2], box[3]
        elif width is None and height is not None:
            width = height * box[2] / box[3]
        elif height is None and width is not None:
            height = width * box[3] / box[2]
    if not width or not height or width <= 0 or height <= 0:
        return None
    return width, height


def svg_measure(data: bytes, opts: Mapping[str, Any], limit: int) -> tuple[int, int]:
    """The pixel box the SVG will be rendered into; refused over `limit` before rendering."""
    _, root = svg_sanitize(data)
    size = svg_intrinsic(root) or (SVG_UNKNOWN_SIDE, SVG_UNKNOWN_SIDE)
    base = (max(1, round(size[0])), max(1, round(size[1])))
    target = target_size(base, opts) or base
    check_pixels(*target, limit=limit)
    return target


def svg_render(data: bytes, opts: Mapping[str, Any], limit: int, workdir: Path) -> Image.Image:
    text, _ = svg_sanitize(data)
    width, height = svg_measure(data, opts, limit)
    empty = workdir / "svg-resources"  # nothing to resolve relative links against
    empty.mkdir(exist_ok=True)
    try:
        png = resvg_py.svg_to_bytes(
            svg_string=text, width=width, height=height, dpi=96, font_family=SVG_FONT,
            resources_dir=str(empty), font_dirs=[str(d) for d in fonts.extra_dirs()] or None,
        )  # fmt: skip
    except ValueError as exc:
        raise ConversionError("The SVG could not be rendered.", f"resvg said: {str(exc)[:200]}") from exc
    im = Image.open(io.BytesIO(png))
    im.load()
    return im

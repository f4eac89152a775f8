"""Pixel limits and the size an image is scaled to, checked before anything is decoded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PIL import Image

from converters.base import ConversionError

PIXEL_LIMIT: int = Image.MAX_IMAGE_PIXELS or 89_478_485  # per frame, as Pillow's own guard


def check_pixels(width: int, height: int, limit: int = PIXEL_LIMIT) -> None:
    if width * height > limit:
        raise ConversionError(
            f"The image declares {width}x{height} pixels, over the {limit / 1e6:.0f} million pixel limit.",
            "Send a smaller image; an image this large is refused before it is decoded.",
        )


def target_size(size: tuple[int, int], opts: Mapping[str, Any]) -> tuple[int, int] | None:
    """Size to scale to before any crop or pad (None: keep the size)."""
    width: int = opts.get("width") or 0  # unset and 0 both mean "follow the other side"
    height: int = opts.get("height") or 0
    w0, h0 = size
    if not width and not height:
        return None
    if not height:
        return width, max(1, round(h0 * width / w0))
    if not width:
        return max(1, round(w0 * height / h0)), height
    fit = opts.get("fit") or "inside"
    if fit == "fill":
        return width, height
    scale = (min if fit in ("inside", "contain") else max)(width / w0, height / h0)
    return max(1, round(w0 * scale)), max(1, round(h0 * scale))


def check_target(size: tuple[int, int] | None) -> None:
    if size and size[0] * size[1] > PIXEL_LIMIT:
        raise ConversionError(
            f"The requested size {size[0]}x{size[1]} is over the "
            f"{PIXEL_LIMIT / 1e6:.0f} million pixel limit.",
            "Ask for a smaller width or height.",
        )

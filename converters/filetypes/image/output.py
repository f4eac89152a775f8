"""What an image output gets: a mode its format holds, its save arguments (quality; the
metadata, ICC, XMP and comment it carries) and an animation's loop."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PIL import Image, PngImagePlugin

from converters.tools import metadata

LOSSY = frozenset({"jpg", "webp", "avif", "heic", "heif", "jxl"})
ALPHA = frozenset(
    {
        "png",
        "webp",
        "gif",
        "tiff",
        "ico",
        "avif",
        "heic",
        "heif",
        "jxl",
        "jp2",
        "tga",
        "qoi",
        "dds",
        "sgi",
    }
)
EXIF_OUT = frozenset({"jpg", "png", "webp", "tiff", "avif", "heic", "heif"})


def colour_for(mode: str, rgba: tuple[int, ...] | None) -> Any:
    r, g, b, a = rgba if rgba is not None else (0, 0, 0, 0)
    grey = round(0.299 * r + 0.587 * g + 0.114 * b)
    return {"L": grey, "LA": (grey, a), "RGB": (r, g, b)}.get(mode, (r, g, b, a))


def for_output(im: Image.Image, fmt: str, background: tuple[int, ...] | None) -> Image.Image:
    """Flatten transparency and pick a mode the output format can hold."""
    if im.mode in ("LA", "RGBA") and fmt not in ALPHA:
        bg = background or (255, 255, 255, 255)
        base = Image.new("RGBA", im.size, (*bg[:3], 255))
        base.alpha_composite(im.convert("RGBA"))
        im = base.convert("RGB") if im.mode == "RGBA" else base.convert("L")
    if fmt == "pbm" or fmt == "xbm":
        return im.convert("1")
    if fmt == "pgm":
        return im.convert("L")
    if fmt in ("ppm", "qoi") or (fmt == "ico" and im.mode == "LA"):
        return im.convert("RGBA" if im.mode in ("LA", "RGBA") and fmt != "ppm" else "RGB")
    if fmt == "webp" and im.mode in ("L", "LA"):
        return im.convert("RGB" if im.mode == "L" else "RGBA")
    return im


def metadata_of(im: Image.Image) -> dict[str, Any]:
    """What the output may carry over, taken before the pixels are let go."""
    return {"exif": im.getexif(), "icc_profile": im.info.get("icc_profile"), "xmp": im.info.get("xmp"),
            "comment": im.info.get("comment"), "loop": im.info.get("loop")}  # fmt: skip


# formats whose files hold no colour profile: their pixels are converted to sRGB instead
NO_ICC = frozenset({"gif", "bmp", "pcx", "ppm", "pgm", "pbm", "xbm", "qoi", "sgi", "tga", "ico", "dds"})
XMP_OUT = frozenset({"jpg", "png", "webp", "tiff", "avif"})
COMMENT_OUT = frozenset({"jpg", "gif"})


def save_args(fmt: str, meta: dict[str, Any], im: Image.Image, opts: Mapping[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if fmt in LOSSY:
        args["quality"] = int(opts.get("quality") or 85)
    if fmt == "jpg":
        args["optimize"] = True
    if fmt == "png":
        args["optimize"] = im.width * im.height <= 4_000_000  # slow on big images
    if fmt == "ico":
        side = max(im.size)
        args["sizes"] = [(min(im.width, 256), min(im.height, 256))] + [
            (s, s) for s in (16, 24, 32, 48, 64, 128) if s < min(side, 256)
        ]
    if fmt == "tiff":
        args["compression"] = "tiff_lzw" if im.mode != "1" else "group4"
    icc = meta["icc_profile"]
    if icc and fmt not in NO_ICC:
        args["icc_profile"] = icc
    how = metadata.mode(opts)
    if fmt in EXIF_OUT:
        exif = metadata.exif_for_output(meta["exif"], how)
        if exif:
            args["exif"] = exif
        if exif and fmt == "tiff" and metadata.GPS_IFD in meta["exif"]:
            # libtiff (behind every TIFF compression) refuses the GPS directory Pillow
            # hands it; Pillow's own writer keeps it, uncompressed
            args["compression"] = None
    if fmt in XMP_OUT:
        xmp = metadata.xmp_for_output(meta["xmp"], how)
        if xmp and fmt == "png":
            info = PngImagePlugin.PngInfo()  # Pillow's PNG writer takes XMP as a text chunk
            info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", "replace"))
            args["pnginfo"] = info
        elif xmp:
            args["xmp"] = xmp
    if fmt in COMMENT_OUT and meta["comment"] and how != "strip":
        args["comment"] = meta["comment"]
    return args


def clean_info(frame: Image.Image) -> Image.Image:
    """Drop what decoding left in info: writers fall back on it (a JPEG comment, a PNG or
    AVIF profile), and only what `save_args` decides may reach the output."""
    for key in ("exif", "xmp", "XML:com.adobe.xmp", "comment", "icc_profile", "loop", "duration"):
        frame.info.pop(key, None)
    return frame


def loop_args(fmt: str, loop: int | None, source: str) -> dict[str, Any]:
    """The loop count in the writer's terms (0: forever). A GIF without a loop block plays
    once, which the other formats say with 1 (and a GIF by having no block); other inputs
    without a count (Pillow reads none from AVIF) loop forever, those formats' default."""
    if fmt == "gif":
        if (loop is None and source == "gif") or (loop == 1 and source != "gif"):
            return {}
        return {"loop": loop or 0}
    if loop is None:
        loop = 1 if source == "gif" else 0
    return {"loop": loop}

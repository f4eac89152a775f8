"""Raster images with Pillow (plus HEIF/HEIC, JPEG XL and SVG input through plugins).

Every input is measured from its header before a pixel is decoded: an image that declares
more than PIXEL_LIMIT pixels (a decompression bomb: a few KB that inflate to gigabytes) is
refused, and Pillow's own bomb guard stays on, its warning promoted to an error. Pillow
may only use the plugin of the declared format, so a file cannot steer it to another
decoder. SVG is rendered by resvg after its links to other files are removed.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image, ImageColor, ImageOps, PngImagePlugin, UnidentifiedImageError

from converters import fonts, heif, jxl, metadata
from converters.base import ConversionError, Converter, Option, Result, Task
from converters.jxl import jxl_size
from converters.sniff import check_declared

HAVE_HEIF = heif.register_decoder()  # HEIF/HEIC in: pi-heif (LGPL libheif, no encoder)
HAVE_HEIF_OUT = HAVE_HEIF and heif.register_encoder()  # out: the separate heif-enc program
try:  # SVG input
    import resvg_py

    HAVE_RESVG = True
except ImportError:  # pragma: no cover
    HAVE_RESVG = False
HAVE_JXL = jxl.available()  # JPEG XL through imagecodecs, imported on first use
if HAVE_JXL:
    jxl.register()

PIXEL_LIMIT: int = Image.MAX_IMAGE_PIXELS or 89_478_485  # per frame, as Pillow's own guard
ANIMATION_PIXEL_LIMIT = 200_000_000  # all frames of an animation kept together
FRAME_LIMIT = 1000
ANIMATION_SECONDS_LIMIT = 3600  # total play time of the frames kept together
MAX_SIDE = 20_000

# extension -> Pillow plugins allowed to open it
READ: dict[str, tuple[str, ...]] = {
    "jpg": ("JPEG", "MPO"), "png": ("PNG",), "webp": ("WEBP",), "gif": ("GIF",),
    "bmp": ("BMP", "DIB"), "tiff": ("TIFF",), "ico": ("ICO",), "avif": ("AVIF",),
    "jp2": ("JPEG2000",), "tga": ("TGA",), "psd": ("PSD",), "pcx": ("PCX",),
    "ppm": ("PPM",), "pgm": ("PPM",), "pbm": ("PPM",), "qoi": ("QOI",), "dds": ("DDS",),
    "icns": ("ICNS",), "sgi": ("SGI",), "xbm": ("XBM",), "xpm": ("XPM",),
}  # fmt: skip
# extension -> Pillow writer; every one was checked to read back (icns is input only:
# Pillow stretches any image to a 1024x1024 square)
WRITE: dict[str, str] = {
    "jpg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF", "bmp": "BMP", "tiff": "TIFF",
    "ico": "ICO", "avif": "AVIF", "jp2": "JPEG2000", "tga": "TGA", "pcx": "PCX", "ppm": "PPM",
    "pgm": "PPM", "pbm": "PPM", "qoi": "QOI", "dds": "DDS", "sgi": "SGI", "xbm": "XBM",
}  # fmt: skip
if HAVE_HEIF:
    READ |= {"heic": ("HEIF",), "heif": ("HEIF",)}
if HAVE_HEIF_OUT:
    WRITE |= {"heic": "HEIF", "heif": "HEIF"}
if HAVE_JXL:
    READ["jxl"] = ("JXL",)
    WRITE["jxl"] = "JXL"

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
ANIMATED_OUT = frozenset({"gif", "webp", "png", "avif", "tiff"})
MULTI_FRAME_IN = frozenset({"gif", "webp", "png", "tiff", "avif", "heic", "heif"})
EXIF_OUT = frozenset({"jpg", "png", "webp", "tiff", "avif", "heic", "heif"})
FITS = ("inside", "outside", "contain", "cover", "fill")


def _open(path: Path, fmt: str) -> Image.Image:
    """Open (header only) with the declared format's plugin and the size guards on."""
    if fmt == "jxl":
        # the JXL plugin decodes the whole image in open(): refuse by the header first, with
        # our message (the plugin itself stops at Pillow's bomb limit)
        size = jxl_size(path.read_bytes()[:4096])
        if size is None:
            raise ConversionError(
                "The file is not a readable jxl image.", "Check that the file is a JPEG XL image."
            )
        _check_pixels(*size)
    try:
        im = Image.open(path, formats=READ[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow refused by its own guard; look again without it, for the message only
        with _bomb_guard_off():
            im = Image.open(path, formats=READ[fmt])
        _check_pixels(*im.size)
        raise
    except (UnidentifiedImageError, SyntaxError, ValueError, OSError, EOFError) as exc:
        raise ConversionError(
            f"The file is not a readable {fmt} image.",
            f"The {fmt} decoder said: {str(exc)[:200]}",
        ) from exc
    _check_pixels(*im.size)
    return im


@contextlib.contextmanager
def _bomb_guard_off() -> Iterator[None]:
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _check_pixels(width: int, height: int, limit: int = PIXEL_LIMIT) -> None:
    if width * height > limit:
        raise ConversionError(
            f"The image declares {width}x{height} pixels, over the {limit / 1e6:.0f} million pixel limit.",
            "Send a smaller image; an image this large is refused before it is decoded.",
        )


@contextlib.contextmanager
def _strict() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _frame_count(im: Image.Image) -> int:
    return int(getattr(im, "n_frames", 1) or 1)


def _target_size(size: tuple[int, int], opts: Mapping[str, Any]) -> tuple[int, int] | None:
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


def _check_target(size: tuple[int, int] | None) -> None:
    if size and size[0] * size[1] > PIXEL_LIMIT:
        raise ConversionError(
            f"The requested size {size[0]}x{size[1]} is over the "
            f"{PIXEL_LIMIT / 1e6:.0f} million pixel limit.",
            "Ask for a smaller width or height.",
        )


def _background(opts: Mapping[str, Any]) -> tuple[int, int, int, int] | None:
    value = opts.get("background")
    if not value:
        return None
    try:
        rgb = ImageColor.getcolor(value, "RGBA")
    except ValueError as exc:
        raise ConversionError(
            f"Invalid background colour {value!r}.",
            "Use a CSS colour: a name (white), #rrggbb, #rrggbbaa or rgb(r, g, b).",
        ) from exc
    return rgb  # type: ignore[return-value]  # mode RGBA: always a 4-tuple, typeshed says tuple | int


def _normalize(im: Image.Image) -> Image.Image:
    """Any decoded mode -> L, LA, RGB or RGBA, keeping transparency."""
    if im.mode in ("L", "LA", "RGB", "RGBA"):
        if "transparency" in im.info and im.mode in ("L", "RGB"):
            return im.convert("LA" if im.mode == "L" else "RGBA")
        return im
    if im.mode == "P":
        return im.convert("RGBA" if "transparency" in im.info or im.has_transparency_data else "RGB")
    if im.mode == "PA":
        return im.convert("RGBA")
    if im.mode in ("1", "I;16", "I;16B", "I;16L", "I", "F"):
        if im.mode != "1" and im.mode != "F":
            # 16-bit grey: scale to 8 bits instead of clipping everything above 255
            return im.point(lambda v: v / 256).convert("L")
        return im.convert("L")
    if im.mode in ("La", "RGBa"):
        return im.convert(im.mode.upper())
    return im.convert("RGBA" if "A" in im.getbands() else "RGB")


def _resize(im: Image.Image, opts: Mapping[str, Any], pad: tuple[int, ...] | None) -> Image.Image:
    target = _target_size(im.size, opts)
    if target and target != im.size:
        im = im.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    width, height = opts.get("width"), opts.get("height")
    fit = opts.get("fit") or "inside"
    if width and height and fit == "cover" and im.size != (width, height):
        left, top = (im.width - width) // 2, (im.height - height) // 2
        im = im.crop((left, top, left + width, top + height))
    elif width and height and fit == "contain" and im.size != (width, height):
        if pad is None or pad[3] < 255:
            im = im.convert("LA" if im.mode in ("L", "LA") and pad is None else "RGBA")
        canvas = Image.new(im.mode, (width, height), _colour_for(im.mode, pad))
        canvas.paste(im, ((width - im.width) // 2, (height - im.height) // 2))
        im = canvas
    return im


def _colour_for(mode: str, rgba: tuple[int, ...] | None) -> Any:
    r, g, b, a = rgba if rgba is not None else (0, 0, 0, 0)
    grey = round(0.299 * r + 0.587 * g + 0.114 * b)
    return {"L": grey, "LA": (grey, a), "RGB": (r, g, b)}.get(mode, (r, g, b, a))


def _for_output(im: Image.Image, fmt: str, background: tuple[int, ...] | None) -> Image.Image:
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


def _metadata(im: Image.Image) -> dict[str, Any]:
    """What the output may carry over, taken before the pixels are let go."""
    return {"exif": im.getexif(), "icc_profile": im.info.get("icc_profile"), "xmp": im.info.get("xmp"),
            "comment": im.info.get("comment"), "loop": im.info.get("loop")}  # fmt: skip


# formats whose files hold no colour profile: their pixels are converted to sRGB instead
NO_ICC = frozenset({"gif", "bmp", "pcx", "ppm", "pgm", "pbm", "xbm", "qoi", "sgi", "tga", "ico", "dds"})
XMP_OUT = frozenset({"jpg", "png", "webp", "tiff", "avif"})
COMMENT_OUT = frozenset({"jpg", "gif"})


def _save_args(fmt: str, meta: dict[str, Any], im: Image.Image, opts: Mapping[str, Any]) -> dict[str, Any]:
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


def _clean_info(frame: Image.Image) -> Image.Image:
    """Drop what decoding left in info: writers fall back on it (a JPEG comment, a PNG or
    AVIF profile), and only what `_save_args` decides may reach the output."""
    for key in ("exif", "xmp", "XML:com.adobe.xmp", "comment", "icc_profile", "loop", "duration"):
        frame.info.pop(key, None)
    return frame


def _loop_args(fmt: str, loop: int | None, source: str) -> dict[str, Any]:
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


# --- SVG -------------------------------------------------------------------------------

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
    target = _target_size(base, opts) or base
    _check_pixels(*target, limit=limit)
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


# --- the converter -----------------------------------------------------------------------


class ImageConverter(Converter):
    filetype: ClassVar[str] = "image"
    engine: ClassVar[str] = "pillow"

    def unavailable_formats(self) -> Mapping[str, str]:
        missing = {}
        if not HAVE_HEIF:
            missing["heic"] = missing["heif"] = "pi-heif is not installed, so heic/heif are not offered"
        elif not HAVE_HEIF_OUT:
            missing["heic"] = missing["heif"] = (
                "heif-enc is not installed, so heic/heif are offered as inputs only "
                "(Debian package libheif-examples)"
            )
        return missing

    def pairs(self) -> Mapping[str, frozenset[str]]:
        outputs = frozenset(WRITE)
        inputs = set(READ) | ({"svg"} if HAVE_RESVG else set())
        return {src: outputs for src in sorted(inputs)}

    def options(self, input_format: str, output_format: str) -> Mapping[str, Option]:
        opts: dict[str, Option] = {
            "width": Option("integer", "Output width in pixels (height follows the aspect "
                            "ratio when not given).", minimum=1, maximum=MAX_SIDE),
            "height": Option("integer", "Output height in pixels (width follows the aspect "
                             "ratio when not given).", minimum=1, maximum=MAX_SIDE),
            "fit": Option("string", "How to fit both width and height: inside (whole image, "
                          "within the box), outside (cover the box, no crop), contain (whole "
                          "image, padded to the box), cover (fill the box, cropped), fill "
                          "(stretched).", default="inside", enum=FITS),
            "metadata": metadata.option("image"),
            "strip_metadata": Option("boolean", "Older name of metadata=strip: true removes "
                                     "EXIF, XMP and comments.", default=False),
            "background": Option("string", "Colour under transparent areas when the output "
                                 "has no transparency, and of the padding of fit=contain "
                                 "(CSS colour, e.g. white or #336699). Default: white, or "
                                 "transparent padding where the format allows it."),
        }  # fmt: skip
        if output_format in LOSSY:
            opts["quality"] = Option(
                "integer",
                "Compression quality: higher is better and larger.",
                default=85,
                minimum=1,
                maximum=100,
            )
        if input_format in MULTI_FRAME_IN:
            opts["page"] = Option(
                "integer",
                "Frame or page to convert (1 is the first). By default an animation stays "
                "animated when the output format allows it, otherwise the first frame is used.",
                minimum=1,
            )
        return opts

    def check(self, task: Task) -> None:
        path = task.inputs[0]
        check_declared(path, task.input_format)
        _background(task.options)
        _check_target(_requested_box(task.options))
        if task.input_format == "svg":
            svg_measure(path.read_bytes(), task.options, PIXEL_LIMIT)
            return
        with _strict(), _open(path, task.input_format) as im:
            self._frames_to_convert(im, task)

    def _frames_to_convert(self, im: Image.Image, task: Task) -> list[int]:
        count = _frame_count(im) if task.input_format in MULTI_FRAME_IN else 1
        page = task.options.get("page")
        if page:
            if page > count:
                noun = "frame" if count == 1 else "frames or pages"
                raise ConversionError(
                    f"Page {page} does not exist: the image has {count} {noun}.",
                    f"Ask for a page from 1 to {count}.",
                )
            return [page - 1]
        if count > 1 and task.output_format in ANIMATED_OUT:
            if count > FRAME_LIMIT:
                raise ConversionError(
                    f"The animation has {count} frames, over the {FRAME_LIMIT} frame limit.",
                    "Pick one frame with the page option.",
                )
            _check_pixels(im.width * count, im.height, ANIMATION_PIXEL_LIMIT)
            return list(range(count))
        return [0]

    def convert(self, task: Task) -> Result:
        self.check(task)
        fmt = task.output_format
        out = _output_path(task)
        background = _background(task.options)
        frames: list[Any]  # each set to None once processed
        durations: list[int]
        with _strict():
            if task.input_format == "svg":
                src = svg_render(task.inputs[0].read_bytes(), task.options, PIXEL_LIMIT, task.workdir)
                frames, durations, meta = [src], [], _metadata(src)
            else:
                frames, durations, meta = self._decode(task)
            task.progress(0.5)
            done = []
            total = len(frames)
            to_srgb = meta["icc_profile"] if fmt in NO_ICC else None
            for i in range(total):
                # let go of each decoded frame once processed: an animation is held once
                frame, frames[i] = frames[i], None
                frame = _normalize(ImageOps.exif_transpose(frame))
                if to_srgb and frame.mode in ("RGB", "RGBA"):
                    frame = jxl._to_srgb(frame, to_srgb)  # the output cannot carry the profile
                frame = _resize(frame, task.options, background)
                done.append(_clean_info(_for_output(frame, fmt, background)))
                task.progress(0.5 + 0.4 * (i + 1) / total)
            args = _save_args(fmt, meta, done[0], task.options)
            if len(done) > 1:
                args |= {
                    "save_all": True,
                    "append_images": done[1:],
                    "duration": durations,
                    **_loop_args(fmt, meta["loop"], task.input_format),
                }
                if fmt == "gif":
                    args["disposal"] = 2
            try:
                done[0].save(out, WRITE[fmt], **args)
            except (OSError, ValueError) as exc:
                out.unlink(missing_ok=True)
                raise ConversionError(
                    f"Could not write the image as {fmt}.",
                    f"The {fmt} encoder said: {str(exc)[:200]}",
                ) from exc
        task.progress(1.0)
        return Result(out)

    def _decode(self, task: Task) -> tuple[list[Any], list[int], dict[str, Any]]:
        with _open(task.inputs[0], task.input_format) as im:
            wanted = self._frames_to_convert(im, task)
            target = _target_size(im.size, task.options)
            if im.format == "JPEG" and target:
                # shrink on load: libjpeg decodes at 1/2, 1/4 or 1/8 scale when that still
                # covers the target (both sides, whatever the EXIF orientation turns)
                side = max(target)
                im.draft(im.mode, (side, side))
            frames, durations = [], []
            try:
                for n, index in enumerate(wanted):
                    if task.input_format in MULTI_FRAME_IN:  # (psd counts layers from 1)
                        im.seek(index)
                    im.load()
                    frames.append(im.copy())
                    # (0 or no delay: browsers show such frames for 100 ms)
                    durations.append(round(float(im.info.get("duration") or 100)))
                    if len(wanted) > 1 and sum(durations) > ANIMATION_SECONDS_LIMIT * 1000:
                        raise ConversionError(
                            f"The animation plays for over {ANIMATION_SECONDS_LIMIT} seconds, "
                            "the limit for an animated image.",
                            "Pick one frame with the page option, or convert it to mp4 or webm "
                            "with filetype video.",
                        )
                    task.progress(0.4 * (n + 1) / len(wanted))
                meta = _metadata(im)
            except Image.DecompressionBombError as exc:
                raise ConversionError(
                    "The image is too large to decode safely.",
                    "It contains a part larger than the pixel limit; send a smaller image.",
                ) from exc
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                raise ConversionError(
                    f"The {task.input_format} image is damaged or truncated.",
                    f"The decoder said: {str(exc)[:200]}",
                ) from exc
        return frames, durations, meta


def _requested_box(opts: Mapping[str, Any]) -> tuple[int, int] | None:
    width, height = opts.get("width"), opts.get("height")
    if width and height:
        return width, height
    return None


def _output_path(task: Task) -> Path:
    stem = task.inputs[0].stem or "image"
    out = task.workdir / f"{stem}.{task.output_format}"
    if out.exists() or out in task.inputs:
        out = task.workdir / f"{stem}-converted.{task.output_format}"
    return out

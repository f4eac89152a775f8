"""Raster images with Pillow (plus HEIF/HEIC, JPEG XL and SVG input through plugins).

Every input is measured from its header before a pixel is decoded: an image that declares
more than PIXEL_LIMIT pixels (a decompression bomb: a few KB that inflate to gigabytes) is
refused, and Pillow's own bomb guard stays on, its warning promoted to an error. Pillow
may only use the plugin of the declared format, so a file cannot steer it to another
decoder. SVG is rendered by resvg after its links to other files are removed.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from PIL import ExifTags, Image, ImageColor, ImageOps, UnidentifiedImageError

from converters.base import ConversionError, Converter, Option, RequestError, Result, Task, said
from converters.filetypes.image import heif, jxl
from converters.filetypes.image.jxl import jxl_size
from converters.filetypes.image.output import (
    LOSSY,
    NO_ICC,
    clean_info,
    colour_for,
    for_output,
    loop_args,
    metadata_of,
    save_args,
)
from converters.filetypes.image.sizes import PIXEL_LIMIT, check_pixels, check_target, target_size
from converters.filetypes.image.svg import HAVE_RESVG, svg_measure, svg_render
from converters.sniff import check_declared
from converters.tools import metadata

HAVE_HEIF = heif.register_decoder()  # HEIF/HEIC in: pi-heif (LGPL libheif, no encoder)
HAVE_HEIF_OUT = HAVE_HEIF and heif.register_encoder()  # out: the separate heif-enc program
HAVE_JXL = jxl.available()  # JPEG XL through imagecodecs, imported on first use
if HAVE_JXL:
    jxl.register()

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

ANIMATED_OUT = frozenset({"gif", "webp", "png", "avif", "tiff"})
MULTI_FRAME_IN = frozenset({"gif", "webp", "png", "tiff", "avif", "heic", "heif"})
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
        check_pixels(*size)
    try:
        im = Image.open(path, formats=READ[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow refused by its own guard; look again without it, for the message only
        with _bomb_guard_off():
            im = Image.open(path, formats=READ[fmt])
        check_pixels(*im.size)
        raise
    except (UnidentifiedImageError, SyntaxError, ValueError, OSError, EOFError) as exc:
        raise ConversionError(
            f"The file is not a readable {fmt} image.",
            f"The {fmt} decoder said: {said(exc, path)}",
        ) from exc
    check_pixels(*im.size)
    return im


@contextlib.contextmanager
def _bomb_guard_off() -> Iterator[None]:
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


@contextlib.contextmanager
def _strict() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _frame_count(im: Image.Image) -> int:
    return int(getattr(im, "n_frames", 1) or 1)


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


def _resize(
    im: Image.Image, opts: Mapping[str, Any], pad: tuple[int, ...] | None, full: tuple[int, int] | None = None
) -> Image.Image:
    # `full`: the size before a shrink on load, so the output's size is rounded as without it
    target = target_size(full or im.size, opts)
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
        canvas = Image.new(im.mode, (width, height), colour_for(im.mode, pad))
        canvas.paste(im, ((width - im.width) // 2, (height - im.height) // 2))
        im = canvas
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

    def check_options(self, input_format: str, output_format: str, options: Mapping[str, Any]) -> None:
        try:
            _background(options)
        except ConversionError as exc:
            raise RequestError(exc.message, exc.hint or "", field="background") from None

    _checked: Task | None = None  # the task check() last passed (convert checks others)

    def check(self, task: Task) -> None:
        path = task.inputs[0]
        check_declared(path, task.input_format)
        _background(task.options)
        check_target(_requested_box(task.options))
        if task.input_format == "svg":
            svg_measure(path.read_bytes(), task.options, PIXEL_LIMIT)
        else:
            with _strict(), _open(path, task.input_format) as im:
                self._frames_to_convert(im, task)
        self._checked = task

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
            check_pixels(im.width * count, im.height, ANIMATION_PIXEL_LIMIT)
            return list(range(count))
        return [0]

    def convert(self, task: Task) -> Result:
        if self._checked is not task:  # (the sandbox checks, then converts the same task)
            self.check(task)
        fmt = task.output_format
        out = _output_path(task)
        background = _background(task.options)
        frames: list[Any]  # each set to None once processed
        durations: list[int]
        with _strict():
            if task.input_format == "svg":
                src = svg_render(task.inputs[0].read_bytes(), task.options, PIXEL_LIMIT, task.workdir)
                frames, durations, meta = [src], [], metadata_of(src)
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
                frame = _resize(frame, task.options, background, meta.get("full_size"))
                done.append(clean_info(for_output(frame, fmt, background)))
                task.progress(0.5 + 0.4 * (i + 1) / total)
            args = save_args(fmt, meta, done[0], task.options)
            if len(done) > 1:
                args |= {
                    "save_all": True,
                    "append_images": done[1:],
                    "duration": durations,
                    **loop_args(fmt, meta["loop"], task.input_format),
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
            full = _shrink_on_load(im, task.options) if im.format == "JPEG" else None
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
                meta = metadata_of(im) | {"full_size": full}
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


def _shrink_on_load(im: Image.Image, opts: Mapping[str, Any]) -> tuple[int, int] | None:
    """Have libjpeg decode at 1/2, 1/4 or 1/8 scale when that still covers the size the
    image is resized to, in both directions (as thumbor does): 2 MP -> 800 px wide decodes
    a quarter of the pixels, 640x480 -> 320 px comes out of the decoder at its final size.
    The target is worked out on the image as shown, then turned back to the stored
    orientation when its EXIF orientation turns it by 90 degrees. Returns the size as shown
    before the shrink (what the output's size is worked out from)."""
    turned = im.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8)
    shown = (im.height, im.width) if turned else im.size
    target = target_size(shown, opts)
    if not target:
        return None
    im.draft(im.mode, (target[1], target[0]) if turned else target)
    return shown


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

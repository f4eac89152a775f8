"""JPEG XL for Pillow through imagecodecs (BSD-3-Clause, bundles libjxl under BSD-3-Clause).

It replaces pillow-jxl-plugin, which is GPL-3.0 and so cannot ship in an Apache-2.0
service. `register()` adds a "JXL" format to Pillow: opening reads the declared size from
the header and applies Pillow's decompression-bomb guard to it before a pixel is decoded;
only then is the first frame decoded (libjxl has no cheap way to learn the channel layout,
which Pillow needs at open time). imagecodecs, and numpy with it, are imported on first
use: a sandbox child converting a PNG should not pay ~190 ms for them.
"""

from __future__ import annotations

import importlib.util
from typing import IO, Any

from PIL import Image, ImageFile

FORMAT = "JXL"
_CONTAINER = b"\0\0\0\x0cJXL \r\n\x87\n"


def available() -> bool:
    """imagecodecs is installed (its PyPI wheels always carry libjxl)."""
    return importlib.util.find_spec("imagecodecs") is not None


def _accept(prefix: bytes) -> bool:
    return prefix[:2] == b"\xff\x0a" or prefix[:12] == _CONTAINER


def jxl_size(head: bytes) -> tuple[int, int] | None:
    """Width and height from a JPEG XL SizeHeader (bare codestream or ISO BMFF container)."""
    code = head
    if head[:4] == b"\0\0\0\x0c" and head[4:8] == b"JXL ":
        code, pos = b"", 0
        while pos + 8 <= len(head):
            size = int.from_bytes(head[pos : pos + 4], "big")
            kind, body = head[pos + 4 : pos + 8], pos + 8
            if size == 1:
                size, body = int.from_bytes(head[pos + 8 : pos + 16], "big"), pos + 16
            if kind == b"jxlc":
                code = head[body:]
                break
            if kind == b"jxlp":
                code = head[body + 4 :]
                break
            if size < 8:
                return None
            pos += size
    if code[:2] != b"\xff\x0a":
        return None
    bits = int.from_bytes(code[2:16], "little")
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        value = (bits >> pos) & ((1 << n) - 1)
        pos += n
        return value

    def u32() -> int:
        return read((9, 13, 18, 30)[read(2)]) + 1

    div8 = read(1)
    height = (read(5) + 1) * 8 if div8 else u32()
    ratio = read(3)
    if ratio:
        num, den = ((1, 1), (12, 10), (4, 3), (3, 2), (16, 9), (5, 4), (2, 1))[ratio - 1]
        return height * num // den, height
    width = (read(5) + 1) * 8 if div8 else u32()
    return width, height


def _to_image(pixels: Any) -> Image.Image:
    """A decoded array (H, W[, C]) of uint8, uint16 or float as an 8-bit Pillow image."""
    import numpy as np

    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)  # Pillow has no 16-bit RGB(A) modes
    elif pixels.dtype.kind == "f":
        pixels = (np.clip(pixels, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        raise SyntaxError(f"unsupported JPEG XL sample type {pixels.dtype}")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}.get(channels)
    if mode is None:
        raise SyntaxError(f"unsupported JPEG XL channel count {channels}")
    if channels == 1 and pixels.ndim == 3:
        pixels = pixels[:, :, 0]
    return Image.frombuffer(mode, (pixels.shape[1], pixels.shape[0]), np.ascontiguousarray(pixels),
                            "raw", mode, 0, 1)  # fmt: skip


class JxlImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "JPEG XL (libjxl via imagecodecs)"

    def _open(self) -> None:
        assert self.fp is not None
        data = self.fp.read()
        size = jxl_size(data[:4096])
        if size is None:
            raise SyntaxError("not a JPEG XL image, or its size header is unreadable")
        # Image.open would run this check after _open, i.e. after we decoded: run it first.
        Image._decompression_bomb_check(size)
        import imagecodecs

        try:
            pixels = imagecodecs.jpegxl_decode(data, index=0)
        except imagecodecs.JpegxlError as exc:
            raise SyntaxError(f"JPEG XL decoder: {exc}") from None
        if pixels.ndim == 4:  # (frames, H, W, C) from an animation: the first frame
            pixels = pixels[0]
        self._decoded = _to_image(pixels)
        self._size = self._decoded.size
        self._mode = self._decoded.mode
        self.n_frames = 1
        self.is_animated = False
        self.tile = []

    def load(self) -> Any:
        if self._im is None:
            self.im = self._decoded.im
            self._decoded = None  # type: ignore[assignment]  # let go of the second reference
        return Image.Image.load(self)


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    import imagecodecs
    import numpy as np

    info = im.encoderinfo
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
    icc = info.get("icc_profile")
    if icc and im.mode in ("RGB", "RGBA"):
        im = _to_srgb(im, icc)  # imagecodecs writes no ICC profile: keep the colours instead
    quality = int(info.get("quality", 90))  # libjxl's own 0-100 quality scale
    lossless = bool(info.get("lossless", False))
    effort = int(info.get("effort", 7))
    try:
        data = imagecodecs.jpegxl_encode(np.asarray(im), None if lossless else quality,
                                         effort=effort, lossless=lossless or None)  # fmt: skip
    except imagecodecs.JpegxlError as exc:
        raise OSError(f"JPEG XL encoder: {exc}") from None
    fp.write(data)


def _to_srgb(im: Image.Image, icc: bytes) -> Image.Image:
    import io

    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        alpha = im.getchannel("A") if im.mode == "RGBA" else None
        rgb = ImageCms.profileToProfile(im.convert("RGB"), source, ImageCms.createProfile("sRGB"))
    except (ImageCms.PyCMSError, OSError, ValueError):
        return im  # an unusable profile: the pixels as they are
    assert rgb is not None
    if alpha is not None:
        rgb.putalpha(alpha)
    return rgb


def register() -> None:
    Image.register_open(FORMAT, JxlImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, ".jxl")
    Image.register_mime(FORMAT, "image/jxl")

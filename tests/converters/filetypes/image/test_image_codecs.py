"""JPEG XL through imagecodecs (converters.filetypes.image.jxl) and HEIF through pi-heif and heif-enc
(converters.filetypes.image.heif): the corners the pair-by-pair tests of test_image.py do not reach."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image, ImageCms

from converters.base import ConversionError, Task
from converters.filetypes.image import converter as image
from converters.filetypes.image import heif
from converters.filetypes.image.converter import ImageConverter

CONV = ImageConverter()
needs_heif_enc = pytest.mark.skipif(heif.encoder() is None, reason="heif-enc is not installed")


def convert(src: Path, in_fmt: str, out_fmt: str, workdir: Path, **options: object) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    task = Task([src], in_fmt, out_fmt, dict(options), workdir)
    CONV.check(task)
    return CONV.convert(task).path


def test_importing_the_converter_does_not_load_imagecodecs() -> None:
    # a sandbox child converting a PNG should not pay for imagecodecs and numpy
    code = (
        "import sys, converters.filetypes.image.converter; "
        "print('imagecodecs' in sys.modules, 'numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("container", [False, True], ids=["codestream", "container"])
def test_jxl_in_both_wrappings_with_alpha(container: bool, tmp_path: Path) -> None:
    pixels = np.zeros((48, 64, 4), np.uint8)
    pixels[:, :32] = (30, 60, 200, 255)
    pixels[:, 32:] = (200, 30, 40, 0)  # transparent right half
    src = tmp_path / "in.jxl"
    src.write_bytes(imagecodecs.jpegxl_encode(pixels, lossless=True, usecontainer=container))
    assert image.jxl_size(src.read_bytes()[:4096]) == (64, 48)
    out = Image.open(convert(src, "jxl", "png", tmp_path / "job"))
    assert out.mode == "RGBA" and out.size == (64, 48)
    assert out.getpixel((5, 5)) == (30, 60, 200, 255)
    assert out.getpixel((50, 5))[3] == 0


def test_jxl_sixteen_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (16, 1))
    src = tmp_path / "deep.jxl"
    src.write_bytes(imagecodecs.jpegxl_encode(ramp, lossless=True))
    out = Image.open(convert(src, "jxl", "png", tmp_path / "job")).convert("L")
    assert out.getpixel((0, 0)) == 0 and out.getpixel((63, 0)) == 255
    assert 100 < out.getpixel((32, 0)) < 160


def test_truncated_jxl_fails_cleanly(tmp_path: Path) -> None:
    whole = imagecodecs.jpegxl_encode(np.full((256, 256, 3), 128, np.uint8), 90)
    src = tmp_path / "cut.jxl"
    src.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ConversionError, match="not a readable jxl image"):
        convert(src, "jxl", "png", tmp_path / "job")


@pytest.mark.parametrize("profile", ["srgb", "junk"])
def test_jxl_output_of_an_image_with_an_icc_profile(profile: str, tmp_path: Path) -> None:
    """imagecodecs writes no ICC profile, so the pixels are converted to sRGB first; a
    profile Little CMS cannot read leaves them as they are."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes() if profile == "srgb" else b"junk"
    src = tmp_path / "tagged.png"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(src, icc_profile=icc)
    out = Image.open(convert(src, "png", "jxl", tmp_path / "job", quality=95)).convert("RGB")
    assert all(abs(a - b) < 12 for a, b in zip(out.getpixel((16, 16)), (10, 200, 30), strict=True))


@needs_heif_enc
def test_heic_output_keeps_exif_and_quality_matters(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    src = tmp_path / "camera.jpg"
    Image.effect_noise((120, 90), 60).convert("RGB").save(src, "JPEG", exif=exif, quality=95)
    low = convert(src, "jpg", "heic", tmp_path / "low", quality=10)
    high = convert(src, "jpg", "heic", tmp_path / "high", quality=95)
    assert low.stat().st_size < high.stat().st_size * 0.8
    with Image.open(high) as back:
        assert back.format == "HEIF" and back.size == (120, 90)
        assert back.getexif().get(0x010F) == "TestCam"
    stripped = convert(src, "jpg", "heic", tmp_path / "stripped", strip_metadata=True)
    with Image.open(stripped) as back:
        assert 0x010F not in back.getexif()


@needs_heif_enc
def test_heif_enc_failure_is_a_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heif, "encoder", lambda: "/bin/false")
    src = tmp_path / "in.png"
    Image.new("RGB", (16, 16), "red").save(src)
    with pytest.raises(ConversionError, match="Could not write the image as heic") as err:
        convert(src, "png", "heic", tmp_path / "job")
    assert "heif-enc failed" in (err.value.hint or "")


def test_without_heif_enc_heic_is_input_only(monkeypatch: pytest.MonkeyPatch) -> None:
    code = (
        "import shutil; real = shutil.which\n"
        "shutil.which = lambda name, *a, **k: None if name == 'heif-enc' else real(name, *a, **k)\n"
        "from converters.filetypes.image.converter import ImageConverter\n"
        "c = ImageConverter(); p = c.pairs()\n"
        "print('heic' in p, 'heic' in p['png'], c.unavailable_formats()['heic'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("True False heif-enc is not installed")


def test_heic_bomb_is_refused_by_its_header(tmp_path: Path) -> None:
    """A real HEIC whose declared sizes (every ispe box) are rewritten to 100000x100000."""
    if heif.encoder() is None:
        pytest.skip("heif-enc is not installed")
    src = tmp_path / "small.heic"
    Image.new("RGB", (64, 48), "red").save(src, "HEIF", quality=50)
    data = src.read_bytes()
    at = data.find(b"ispe")
    while at >= 0:  # box type, then version and flags (4 bytes), width, height (4 each)
        data = data[: at + 8] + (100_000).to_bytes(4, "big") * 2 + data[at + 16 :]
        at = data.find(b"ispe", at + 4)
    bomb = tmp_path / "bomb.heic"
    bomb.write_bytes(data)
    with pytest.raises(ConversionError, match="declares 100000x100000 pixels"):
        CONV.check(Task([bomb], "heic", "png", {}, tmp_path))

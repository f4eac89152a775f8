"""converters.filetypes.image.converter: every listed pair, the options, and hostile images.

Inputs are generated here (Pillow for what it writes, by hand for PSD, XPM and SVG) and
outputs are decoded again with Pillow without the converter's format restriction.
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from converters.base import ConversionError, Task
from converters.filetypes.image.converter import READ, WRITE, ImageConverter
from converters.sandbox import parent as sandbox
from converters.sandbox.failures import SandboxError

CONV = ImageConverter()
SIZE = (64, 48)
BLUE, RED = (30, 60, 200), (200, 30, 40)
BILEVEL = {"pbm", "xbm"}
GREY = {"pgm"}


def base_image() -> Image.Image:
    im = Image.new("RGB", SIZE, RED)
    im.paste(BLUE, (0, 0, 32, 48))
    return im


def _psd(im: Image.Image) -> bytes:
    w, h = im.size
    head = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, h, w, 8, 3)
    planes = b"".join(band.tobytes() for band in im.split())
    return head + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + planes


def _xpm(im: Image.Image) -> bytes:
    rows = []
    for y in range(im.height):
        rows.append("".join("a" if im.getpixel((x, y)) == BLUE else "b" for x in range(im.width)))
    lines = [f'"{im.width} {im.height} 2 1",', '"a c #1E3CC8",', '"b c #C81E28",']
    lines += [f'"{r}",' for r in rows]
    return ("/* XPM */\nstatic char *x[] = {\n" + "\n".join(lines) + "\n};\n").encode()


SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48">'
    '<rect width="64" height="48" fill="#C81E28"/><rect width="32" height="48" fill="#1E3CC8"/>'
    "</svg>"
)


def make_input(fmt: str, folder: Path) -> Path:
    path = folder / f"sample.{fmt}"
    im = base_image()
    if fmt == "psd":
        path.write_bytes(_psd(im))
    elif fmt == "xpm":
        path.write_bytes(_xpm(im))
    elif fmt == "svg":
        path.write_text(SVG)
    elif fmt == "icns":
        im.save(path, "ICNS")
    elif fmt == "ico":
        im.save(path, "ICO", sizes=[SIZE])
    else:
        if fmt in BILEVEL:
            im = im.convert("1")
        elif fmt in GREY:
            im = im.convert("L")
        im.save(path, WRITE[fmt])
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("image-inputs")
    return {fmt: make_input(fmt, folder) for fmt in CONV.pairs()}


def run(path: Path, src: str, dst: str, workdir: Path, **options: object) -> Image.Image:
    workdir.mkdir(parents=True, exist_ok=True)
    task = Task([path], src, dst, dict(options), workdir)
    CONV.check(task)
    result = CONV.convert(task)
    assert result.path.parent == workdir and result.path.suffix == f".{dst}"
    out = Image.open(result.path)  # any plugin: the output is checked independently
    out.load()
    return out


PAIRS = [(src, dst) for src, dsts in sorted(CONV.pairs().items()) for dst in sorted(dsts)]


def test_formats_offered() -> None:
    pairs = CONV.pairs()
    for fmt in ("jpg", "png", "webp", "gif", "bmp", "tiff", "ico", "heic", "avif", "jxl", "svg"):
        assert fmt in pairs
    assert "svg" not in pairs["png"] and "psd" not in pairs["png"]  # read-only formats


def _close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=False))


@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=[f"{s}-{d}" for s, d in PAIRS])
def test_matrix(src: str, dst: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    out = run(inputs[src], src, dst, tmp_path)
    if src != "icns":  # icns holds squares: Pillow makes a 1024x1024 icon
        assert out.size == SIZE
    if {src, dst} & (BILEVEL | GREY):
        return  # colour is gone; the size and a clean decode are what can be checked
    rgb = out.convert("RGB")
    w, h = out.size
    assert _close(rgb.getpixel((w // 4, h // 2)), BLUE), rgb.getpixel((w // 4, h // 2))
    assert _close(rgb.getpixel((3 * w // 4, h // 2)), RED), rgb.getpixel((3 * w // 4, h // 2))


# --- options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "size"),
    [
        ({"width": 32}, (32, 24)),
        ({"height": 24}, (32, 24)),
        ({"width": 32, "height": 32}, (32, 24)),  # inside is the default
        ({"width": 32, "height": 32, "fit": "inside"}, (32, 24)),
        ({"width": 32, "height": 32, "fit": "outside"}, (43, 32)),
        ({"width": 32, "height": 32, "fit": "cover"}, (32, 32)),
        ({"width": 32, "height": 32, "fit": "contain"}, (32, 32)),
        ({"width": 32, "height": 32, "fit": "fill"}, (32, 32)),
        ({"width": 640}, (640, 480)),
    ],
)
def test_resize(options: dict, size: tuple[int, int], inputs: dict, tmp_path: Path) -> None:
    assert run(inputs["png"], "png", "png", tmp_path, **options).size == size


def test_contain_pads_transparent_or_with_background(inputs: dict, tmp_path: Path) -> None:
    out = run(inputs["png"], "png", "png", tmp_path / "a", width=32, height=32, fit="contain")
    assert out.convert("RGBA").getpixel((16, 1))[3] == 0  # padding above the image
    assert out.convert("RGBA").getpixel((16, 16))[3] == 255
    out = run(inputs["png"], "png", "jpg", tmp_path / "b", width=32, height=32, fit="contain",
              background="#00ff00")  # fmt: skip
    assert _close(out.convert("RGB").getpixel((16, 1)), (0, 255, 0))


def test_cover_crops_the_middle(inputs: dict, tmp_path: Path) -> None:
    out = run(inputs["png"], "png", "png", tmp_path, width=48, height=48, fit="cover").convert("RGB")
    assert out.getpixel((2, 24)) == BLUE and out.getpixel((45, 24)) == RED


def _noise(path: Path) -> Path:
    Image.frombytes("RGB", (200, 150), bytes(range(256)) * 351 + bytes(744)).save(path)
    return path


@pytest.mark.parametrize("fmt", ["jpg", "webp", "avif", "heic", "jxl"])
def test_quality_changes_size(fmt: str, tmp_path: Path) -> None:
    src = _noise(tmp_path / "noise.png")
    sizes = []
    for quality in (10, 95):
        task = Task([src], "png", fmt, {"quality": quality}, tmp_path / str(quality))
        task.workdir.mkdir()
        sizes.append(CONV.convert(task).path.stat().st_size)
    assert sizes[0] < sizes[1] * 0.8, sizes


def _jpeg_with_exif(path: Path, orientation: int = 1) -> Path:
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    exif[0x0112] = orientation
    base_image().save(path, "JPEG", exif=exif, quality=95)
    return path


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    src = _jpeg_with_exif(tmp_path / "rotated.jpg", orientation=6)  # display turned 90° cw
    out = run(src, "jpg", "png", tmp_path / "out").convert("RGB")
    assert out.size == (48, 64)
    assert _close(out.getpixel((24, 10)), BLUE) and _close(out.getpixel((24, 54)), RED)
    assert out.getexif().get(0x0112, 1) == 1  # not rotated twice by a viewer


@pytest.mark.parametrize("dst", ["jpg", "png", "webp", "tiff"])
def test_metadata_kept_or_stripped(dst: str, tmp_path: Path) -> None:
    src = _jpeg_with_exif(tmp_path / "camera.jpg")
    kept = run(src, "jpg", dst, tmp_path / "kept")
    assert kept.getexif().get(0x010F) == "TestCam"
    stripped = run(src, "jpg", dst, tmp_path / "stripped", strip_metadata=True)
    assert 0x010F not in stripped.getexif()


def test_transparency_flattened_on_background(tmp_path: Path) -> None:
    src = tmp_path / "alpha.png"
    im = Image.new("RGBA", SIZE, (*RED, 255))
    im.paste((0, 0, 0, 0), (0, 0, 32, 48))
    im.save(src)
    white = run(src, "png", "jpg", tmp_path / "white").convert("RGB")
    assert _close(white.getpixel((10, 10)), (255, 255, 255), 8)
    green = run(src, "png", "bmp", tmp_path / "green", background="rgb(0, 255, 0)")
    assert green.convert("RGB").getpixel((10, 10)) == (0, 255, 0)
    assert green.convert("RGB").getpixel((50, 10)) == RED
    kept = run(src, "png", "webp", tmp_path / "kept").convert("RGBA")
    assert kept.getpixel((10, 10))[3] == 0  # formats with alpha keep it


def test_invalid_background_is_refused(inputs: dict, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="background colour"):
        run(inputs["png"], "png", "jpg", tmp_path, background="not-a-colour")


def _animation(path: Path, fmt: str) -> Path:
    frames = [Image.new("RGB", SIZE, c) for c in (RED, (20, 200, 40), BLUE)]
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=80, loop=0)
    return path


@pytest.mark.parametrize(("src", "dst"), [("gif", "webp"), ("webp", "gif"), ("gif", "png"),
                                          ("tiff", "gif")])  # fmt: skip
def test_animation_kept(src: str, dst: str, tmp_path: Path) -> None:
    path = _animation(tmp_path / f"anim.{src}", WRITE[src])
    out = run(path, src, dst, tmp_path / "out")
    assert getattr(out, "n_frames", 1) == 3
    out.seek(2)
    assert _close(out.convert("RGB").getpixel((5, 5)), BLUE)


def test_page_picks_one_frame(tmp_path: Path) -> None:
    path = _animation(tmp_path / "anim.gif", "GIF")
    out = run(path, "gif", "png", tmp_path / "p2", page=2)
    assert getattr(out, "n_frames", 1) == 1
    assert _close(out.convert("RGB").getpixel((5, 5)), (20, 200, 40))
    tiff = _animation(tmp_path / "pages.tiff", "TIFF")
    assert _close(run(tiff, "tiff", "jpg", tmp_path / "t3", page=3).getpixel((5, 5)), BLUE)
    with pytest.raises(ConversionError, match="Page 4 does not exist: the image has 3"):
        run(path, "gif", "png", tmp_path / "p4", page=4)


def test_options_schema() -> None:
    opts = CONV.options("gif", "jpg")
    assert {"quality", "width", "height", "fit", "strip_metadata", "background", "page"} <= set(opts)
    assert opts["quality"].schema()["maximum"] == 100
    assert "quality" not in CONV.options("png", "png")
    assert "page" not in CONV.options("jpg", "png")


def test_svg_text_is_rendered(tmp_path: Path) -> None:
    src = tmp_path / "text.svg"
    src.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="200" height="60">'
        '<rect width="200" height="60" fill="white"/>'
        '<text x="10" y="45" font-size="40" fill="black">Hello</text></svg>'
    )
    out = run(src, "svg", "png", tmp_path / "out").convert("L")
    assert out.getextrema()[0] < 60  # dark glyph pixels exist: the text was drawn


def test_svg_renders_at_requested_size(tmp_path: Path) -> None:
    src = tmp_path / "v.svg"
    src.write_text(SVG)
    out = run(src, "svg", "png", tmp_path / "out", width=640)
    assert out.size == (640, 480)
    assert _close(out.convert("RGB").getpixel((100, 240)), BLUE, 2)


# --- hostile inputs ------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header declaring a huge image over a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))  # fmt: skip


def gif_bomb() -> bytes:
    screen = struct.pack("<HHBBB", 65535, 65535, 0, 0, 0)
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + image + b"\x3b"


def jxl_bomb() -> bytes:
    """A JPEG XL codestream whose SizeHeader declares 100000x100000 (the rest is junk)."""
    fields = [(0, 1), (3, 2), (99_999, 30), (0, 3), (3, 2), (99_999, 30)]
    bits, pos = 0, 0
    for value, width in fields:
        bits |= value << pos
        pos += width
    return b"\xff\x0a" + bits.to_bytes(12, "little") + b"\x00" * 64


@pytest.mark.parametrize(
    ("fmt", "data", "declared"),
    [
        ("png", png_bomb(100_000, 100_000), "100000x100000"),
        ("png", png_bomb(10_000, 10_000), "10000x10000"),  # Pillow alone would only warn
        ("gif", gif_bomb(), "65535x65535"),
        ("jxl", jxl_bomb(), "100000x100000"),  # its plugin decodes in open(): header first
    ],
    ids=["png", "png-just-over", "gif", "jxl"],
)
def test_bombs_refused_before_decoding(fmt: str, data: bytes, declared: str, tmp_path: Path) -> None:
    src = tmp_path / f"bomb.{fmt}"
    src.write_bytes(data)
    started = time.monotonic()
    with pytest.raises(ConversionError) as err:
        CONV.check(Task([src], fmt, "png", {}, tmp_path))
    assert f"declares {declared} pixels" in err.value.message
    assert "million pixel limit" in err.value.message
    assert time.monotonic() - started < 2


async def test_bomb_refused_in_sandbox_with_a_small_memory_limit(tmp_path: Path) -> None:
    # 100000x100000 RGB needs 30 GB: refused by its header under a 400 MB limit, so the
    # error is ours, not an out-of-memory kill.
    src = tmp_path / "bomb.png"
    src.write_bytes(png_bomb(100_000, 100_000))
    from converters.base import Limits

    with pytest.raises(SandboxError) as err:
        await sandbox.run("image", "png", "jpg", {}, [src], tmp_path / "job",
                          limits=Limits(memory_bytes=400 * 1024**2))  # fmt: skip
    assert err.value.kind == "converter"
    assert "declares 100000x100000 pixels" in err.value.message


def test_svg_bomb_and_entities_refused(tmp_path: Path) -> None:
    huge = tmp_path / "huge.svg"
    huge.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000"/>')
    with pytest.raises(ConversionError, match="declares 100000x100000 pixels"):
        CONV.check(Task([huge], "svg", "png", {}, tmp_path))
    # asked small, the same drawing is fine: a vector has no pixels until rendered
    assert run(huge, "svg", "png", tmp_path / "small", width=100).size == (100, 100)
    laughs = tmp_path / "laughs.svg"
    laughs.write_text(
        '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><text>&c;</text></svg>'
    )
    with pytest.raises(ConversionError, match="entities"):
        run(laughs, "svg", "png", tmp_path / "laughs")


def test_svg_cannot_pull_in_local_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    Image.new("RGB", (10, 10), (255, 0, 0)).save(secret)
    nested = tmp_path / "nested.svg"
    nested.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        f'<image href="{secret}" width="10" height="10"/></svg>'
    )
    src = tmp_path / "links.svg"
    src.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        'width="40" height="10"><rect width="40" height="10" fill="white"/>'
        f'<image xlink:href="{secret}" x="0" width="10" height="10"/>'
        f'<image href="file://{secret}" x="10" width="10" height="10"/>'
        f'<image href="secret.png" x="20" width="10" height="10"/>'
        f'<image href="{nested}" x="30" width="10" height="10"/></svg>'
    )
    out = run(src, "svg", "png", tmp_path / "out").convert("RGB")
    # white everywhere: no image was loaded from disk
    assert ImageChops.difference(out, Image.new("RGB", out.size, "white")).getbbox() is None


def test_embedded_raster_in_svg_still_works(tmp_path: Path) -> None:
    import base64

    buf = io.BytesIO()
    Image.new("RGB", (10, 10), (255, 0, 0)).save(buf, "PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    src = tmp_path / "embedded.svg"
    src.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        f'<image href="data:image/png;base64,{data}" width="10" height="10"/></svg>'
    )
    assert run(src, "svg", "png", tmp_path / "out").convert("RGB").getpixel((5, 5)) == (255, 0, 0)


def test_mismatched_content_is_refused_naming_the_type(inputs: dict, tmp_path: Path) -> None:
    fake = tmp_path / "photo.jpg"
    fake.write_bytes(inputs["png"].read_bytes())
    with pytest.raises(ConversionError) as err:
        run(fake, "jpg", "webp", tmp_path / "out")
    assert err.value.message == "The file is not a jpg: its content is a png file."
    assert "'png'" in (err.value.hint or "")


def test_garbage_is_a_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "broken.tga"  # no magic number: only the decoder can tell
    src.write_bytes(b"\x00\x00\x99" + b"\xff" * 20)
    with pytest.raises(ConversionError, match="not a readable tga image"):
        run(src, "tga", "png", tmp_path / "out")


def test_a_decoders_words_name_the_file_not_the_servers_folders(tmp_path: Path) -> None:
    # Pillow says "cannot identify image file '/full/path'": the job's folder on the server
    # is none of the caller's business
    src = tmp_path / "broken.png"
    src.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x07" * 300)
    with pytest.raises(ConversionError, match="not a readable png image") as err:
        run(src, "png", "webp", tmp_path / "out")
    assert "'broken.png'" in (err.value.hint or "")
    assert str(tmp_path) not in (err.value.hint or "") + err.value.message


def test_readable_formats_cover_pillow_plugins() -> None:
    assert set(READ) >= {"jpg", "png", "webp", "gif", "bmp", "tiff", "ico", "psd", "jp2"}


async def test_through_the_sandbox_with_progress(inputs: dict, tmp_path: Path) -> None:
    seen: list[float] = []

    async def progress(value: float) -> None:
        seen.append(value)

    result = await sandbox.run("image", "png", "webp", {"width": 32}, [inputs["png"]],
                               tmp_path / "job", progress)  # fmt: skip
    assert Image.open(result.path).size == (32, 24)
    assert seen and seen == sorted(seen) and seen[-1] == 1.0


@pytest.mark.parametrize("orientation", [1, 6])
async def test_a_jpeg_shrunk_on_load_keeps_its_size_orientation_and_colours(
    tmp_path: Path, orientation: int
) -> None:
    # left half red, right half blue, stored 1600x800; orientation 6 shows it 800x1600
    stored = Image.new("RGB", (1600, 800), "red")
    stored.paste(Image.new("RGB", (800, 800), "blue"), (800, 0))
    exif = Image.Exif()
    exif[0x0112] = orientation
    src = tmp_path / "photo.jpg"
    stored.save(src, quality=92, exif=exif)
    result = await sandbox.run("image", "jpg", "png", {"width": 100}, [src], tmp_path / "job")
    with Image.open(result.path) as out:
        out = out.convert("RGB")
        if orientation == 1:
            assert out.size == (100, 50)
            left, right = out.getpixel((10, 25)), out.getpixel((90, 25))
        else:  # turned 90° clockwise: the stored left half is now on top
            assert out.size == (100, 200)
            left, right = out.getpixel((50, 20)), out.getpixel((50, 180))
    assert left[0] > 200 and left[2] < 60, left
    assert right[2] > 200 and right[0] < 60, right


@pytest.mark.parametrize(
    ("stored", "orientation", "options", "decoded", "shown"),
    [
        ((640, 480), 1, {"width": 320}, (320, 240), (320, 240)),  # out of the decoder at size
        ((1732, 1155), 1, {"width": 800}, (866, 578), (800, 533)),  # 2 MP -> 800 px: a quarter
        ((1600, 800), 6, {"width": 200}, (400, 200), (200, 400)),  # shown turned: 800x1600
        ((1600, 800), 1, {"width": 1000}, (1600, 800), (1000, 500)),  # half would not cover it
    ],
)
def test_a_jpeg_is_decoded_at_the_smallest_scale_that_covers_its_target(
    tmp_path: Path,
    stored: tuple[int, int],
    orientation: int,
    options: dict[str, int],
    decoded: tuple[int, int],
    shown: tuple[int, int],
) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    src = tmp_path / "photo.jpg"
    Image.effect_noise(stored, 60).convert("RGB").save(src, quality=90, exif=exif)
    task = Task([src], "jpg", "webp", options, tmp_path)
    frames, _, _ = CONV._decode(task)
    assert frames[0].size == decoded
    assert run(src, "jpg", "webp", tmp_path / "out", **options).size == shown

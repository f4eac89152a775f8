"""converters.sniff: naming content by our extensions, and refusing clear mismatches only."""

from __future__ import annotations

import wave
import zipfile
from collections.abc import Callable
from pathlib import Path

import openpyxl
import pytest
from PIL import Image

from converters.base import ConversionError
from converters.filetypes.image import heif
from converters.sniff import check_declared, compatible, detect
from tests.converters.samples_media import ffmpeg
from tests.pdf_samples import pdf_bytes


def _image(fmt: str) -> Callable[[Path], None]:
    return lambda p: Image.new("RGB", (16, 16), "red").save(p, fmt)


def _zip(members: dict[str, str]) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        with zipfile.ZipFile(path, "w") as zf:
            for name, body in members.items():
                zf.writestr(name, body)

    return make


def _pdf(path: Path) -> None:
    path.write_bytes(pdf_bytes(1, "hello"))


def _xlsx(path: Path) -> None:
    book = openpyxl.Workbook()
    book.active.append(["a", 1])
    book.save(path)


def _wav(path: Path) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)


def _video(codec: str) -> Callable[[Path], None]:
    """Two black 32x32 frames, the container chosen by the file's extension."""

    def make(path: Path) -> None:
        ffmpeg("-f", "lavfi", "-i", "color=black:size=32x32:rate=10", "-frames:v", "2",
               "-c:v", codec, "-pix_fmt", "yuv420p", str(path))  # fmt: skip

    return make


def _audio(codec: str) -> Callable[[Path], None]:
    """One frame of mono silence at 48 kHz."""

    def make(path: Path) -> None:
        ffmpeg("-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", "-frames:a", "1", "-c:a", codec, str(path))

    return make


def _text(body: str) -> Callable[[Path], None]:
    return lambda p: p.write_text(body)


OOXML = "[Content_Types].xml"
SAMPLES: dict[str, tuple[str, Callable[[Path], None]]] = {
    # name: (expected detection, maker)
    "png": ("png", _image("PNG")),
    "jpg": ("jpg", _image("JPEG")),
    "gif": ("gif", _image("GIF")),
    "webp": ("webp", _image("WEBP")),
    "bmp": ("bmp", _image("BMP")),
    "tiff": ("tiff", _image("TIFF")),
    "ico": ("ico", _image("ICO")),
    "avif": ("avif", _image("AVIF")),
    "pdf": ("pdf", _pdf),
    "zip": ("zip", _zip({"a.txt": "x"})),
    "docx": ("docx", _zip({OOXML: "<Types/>", "word/document.xml": "<w/>"})),
    "pptx": ("pptx", _zip({OOXML: "<Types/>", "ppt/presentation.xml": "<p/>"})),
    "xlsx": ("xlsx", _xlsx),
    "odt": ("odt", _zip({"mimetype": "application/vnd.oasis.opendocument.text"})),
    "epub": ("epub", _zip({"mimetype": "application/epub+zip", "META-INF/container.xml": "<c/>"})),
    "jar": ("jar", _zip({"META-INF/MANIFEST.MF": "Manifest-Version: 1.0\n"})),
    "json": ("json", _text('{"a": [1, 2]}')),
    "csv": ("txt", _text("a,b\n1,2\n")),
    "xml": ("xml", _text('<?xml version="1.0"?><r/>')),
    "html": ("html", _text("<!DOCTYPE html><html><body>x</body></html>")),
    "svg": ("svg", _text('<svg xmlns="http://www.w3.org/2000/svg"/>')),
    "wav": ("wav", _wav),
    "mp4": ("mp4", _video("libx264")),
    "webm": ("webm", _video("libvpx-vp9")),
    "mkv": ("mkv", _video("libx264")),
    "mp3": ("mp3", _audio("libmp3lame")),
    "opus": ("ogg", _audio("libopus")),
    "flac": ("flac", _audio("flac")),
}


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sniff")
    paths = {}
    for name, (_, make) in SAMPLES.items():
        path = folder / f"sample.{name}"
        make(path)
        paths[name] = path
    return paths


@pytest.mark.parametrize("name", list(SAMPLES))
def test_detect(name: str, samples: dict[str, Path]) -> None:
    assert detect(samples[name]) == SAMPLES[name][0]


@pytest.mark.parametrize("name", list(SAMPLES))
def test_true_declaration_is_accepted(name: str, samples: dict[str, Path]) -> None:
    check_declared(samples[name], name)
    check_declared(samples[name], name.upper())


@pytest.mark.parametrize(
    ("name", "declared", "message"),
    [
        ("jpg", "png", "The file is not a png: its content is a jpg file."),
        ("png", "jpg", "The file is not a jpg: its content is a png file."),
        ("pdf", "docx", "The file is not a docx: its content is a pdf file."),
        ("docx", "xlsx", "The file is not an xlsx: its content is a docx file."),
        ("zip", "docx", "The file is not a docx: its content is a zip file."),
        ("json", "png", "The file is not a png: its content is a json file."),
        ("png", "json", "The file is not a json: its content is a png file."),
        ("mp4", "webm", "The file is not a webm: its content is an mp4 file."),
        ("wav", "mp3", "The file is not an mp3: its content is a wav file."),
        ("epub", "odt", "The file is not an odt: its content is an epub file."),
    ],
)
def test_mismatch_refused_naming_the_content(
    name: str, declared: str, message: str, samples: dict[str, Path]
) -> None:
    with pytest.raises(ConversionError) as err:
        check_declared(samples[name], declared)
    assert err.value.message == message
    assert f"'{SAMPLES[name][0]}'" in (err.value.hint or "")


@pytest.mark.parametrize(
    ("name", "declared"),
    [
        ("docx", "zip"),  # every docx is a zip
        ("docx", "dotx"),  # a template has the same layout
        ("xlsx", "xlsm"),
        ("epub", "zip"),
        ("csv", "json"),  # text formats look alike: left to the parser
        ("json", "yaml"),
        ("xml", "svg"),
        ("html", "md"),
        ("mp4", "m4a"),  # one container family
        ("mp4", "mov"),
        ("mkv", "webm"),
        ("opus", "ogg"),
        ("jpg", "bin"),  # a generic declaration promises nothing
        ("png", "xyz"),  # unknown to us: nothing to compare with
    ],
)
def test_ambiguous_cases_are_lenient(name: str, declared: str, samples: dict[str, Path]) -> None:
    check_declared(samples[name], declared)


def test_empty_and_unknown_content_pass(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    check_declared(empty, "png")  # the decoder says what is wrong with it
    noise = tmp_path / "noise.mp3"
    noise.write_bytes(bytes(range(256)) * 4)
    assert detect(noise) == "tga"  # libmagic's guess for headerless bytes: too weak to act on
    check_declared(noise, "mp3")
    check_declared(noise, "png")


def test_text_is_not_a_binary_format(tmp_path: Path) -> None:
    notes = tmp_path / "notes.mp4"
    notes.write_text("just some notes\nnothing more\n")
    with pytest.raises(ConversionError, match="its content is plain text"):
        check_declared(notes, "mp4")


@pytest.mark.skipif(heif.encoder() is None, reason="heif-enc is not installed")
def test_heic_and_heif_are_one(tmp_path: Path) -> None:
    heif.register_decoder()
    heif.register_encoder()
    path = tmp_path / "x.heif"
    Image.new("RGB", (16, 16)).save(path, "HEIF")
    check_declared(path, "heif")
    check_declared(path, "heic")
    with pytest.raises(ConversionError, match="not an avif"):
        check_declared(path, "avif")


def test_compatible_is_not_symmetric_for_containers() -> None:
    assert compatible("zip", "docx")
    assert not compatible("docx", "zip")


def test_missing_file_is_not_detected(tmp_path: Path) -> None:
    assert detect(tmp_path / "nope.png") is None

"""The `metadata` option: location dropped by default, everything kept, or all stripped.

Inputs are made here: a JPEG that carries EXIF (camera, date, orientation, a GPS position),
an XMP packet that names the position too, and a comment; an mp4/mov/m4a whose container
holds a location atom (QuickTime ©xyz, what phones write). Outputs are read back with
Pillow (any plugin) and ffprobe (with its own command line), never with the converter's own
code.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pikepdf
import pytest
from PIL import Image

from converters.base import RequestError, Task
from converters.filetypes.audio import AudioConverter
from converters.filetypes.image import heif
from converters.filetypes.image.converter import ImageConverter
from converters.filetypes.video import VideoConverter
from converters.registry import Registry
from converters.sandbox import parent as sandbox
from tests.conftest import Account, GraphQL, operation, wait_for_status
from tests.converters.samples_media import ffmpeg, ffprobe, task_for

IMAGE = ImageConverter()
MAKE, DATE, ORIENTATION, GPS = 0x010F, 0x0132, 0x0112, 0x8825
PLACE = "+48.8584+002.2945/"  # ISO 6709, as phones write it
XMP = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
    b'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" '
    b'exif:GPSLatitude="48,51.5N" tiff:Orientation="6" photoshop:City="Paris">'
    b"<exif:GPSLongitude>2,17.7E</exif:GPSLongitude><tiff:Model>Pocket 9</tiff:Model>"
    b'</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
)
IMAGE_OUTPUTS = ["jpg", "png", "webp", "avif"] + (["heic"] if heif.encoder() else [])
XMP_OUTPUTS = {"jpg", "png", "webp", "avif"}  # heif-enc takes EXIF and ICC, no XMP


def geotagged_jpeg(path: Path) -> Path:
    """Stored 64x48, shown turned 90° (orientation 6), taken in Paris."""
    exif = Image.Exif()
    exif[MAKE] = "TestCam"
    exif[DATE] = "2024:05:06 07:08:09"
    exif[ORIENTATION] = 6
    gps = exif.get_ifd(GPS)
    gps.update({1: "N", 2: (48.0, 51.0, 30.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    im = Image.new("RGB", (64, 48), "red")
    im.paste((20, 40, 200), (0, 0, 32, 48))
    im.save(path, "JPEG", exif=exif, xmp=XMP, comment=b"holiday snapshot", quality=95)
    return path


def convert_image(src: Path, dst: str, workdir: Path, **options: object) -> Image.Image:
    workdir.mkdir(parents=True)
    values = Registry([IMAGE]).validate("image", "jpg", dst, options)
    task = Task([src], "jpg", dst, values, workdir)
    IMAGE.check(task)
    out = Image.open(IMAGE.convert(task).path)
    out.load()
    return out


def xmp_of(im: Image.Image) -> bytes:
    xmp = im.info.get("xmp") or b""
    return xmp.encode() if isinstance(xmp, str) else xmp


@pytest.mark.parametrize("dst", IMAGE_OUTPUTS)
def test_location_is_dropped_by_default(dst: str, tmp_path: Path) -> None:
    src = geotagged_jpeg(tmp_path / "photo.jpg")
    out = convert_image(src, dst, tmp_path / "out")
    exif = out.getexif()
    assert GPS not in exif and not exif.get_ifd(GPS)
    # the rest stays: camera, date, and the orientation now that the pixels are upright
    assert exif[MAKE] == "TestCam" and exif[DATE] == "2024:05:06 07:08:09"
    assert exif[ORIENTATION] == 1 and out.size == (48, 64)
    if dst in XMP_OUTPUTS:
        xmp = xmp_of(out)
        assert b"Pocket 9" in xmp
        assert b"GPS" not in xmp and b"Paris" not in xmp
        assert b'tiff:Orientation="1"' in xmp
    if dst == "jpg":
        assert out.info["comment"] == b"holiday snapshot"


@pytest.mark.parametrize("dst", IMAGE_OUTPUTS)
def test_keep_copies_the_location_too(dst: str, tmp_path: Path) -> None:
    src = geotagged_jpeg(tmp_path / "photo.jpg")
    out = convert_image(src, dst, tmp_path / "out", metadata="keep")
    exif = out.getexif()
    gps = exif.get_ifd(GPS)
    assert gps[1] == "N" and [float(v) for v in gps[2]] == [48.0, 51.0, 30.0]
    assert gps[3] == "E" and [float(v) for v in gps[4]] == [2.0, 17.0, 40.0]
    assert exif[MAKE] == "TestCam" and exif[ORIENTATION] == 1
    if dst in XMP_OUTPUTS:
        assert b"GPSLongitude" in xmp_of(out) and b"Paris" in xmp_of(out)


@pytest.mark.parametrize("dst", IMAGE_OUTPUTS)
def test_strip_removes_exif_xmp_and_comments(dst: str, tmp_path: Path) -> None:
    src = tmp_path / "photo.jpg"
    icc = Image.open(geotagged_jpeg(src)).info.get("icc_profile")
    out = convert_image(src, dst, tmp_path / "out", metadata="strip")
    assert len(out.getexif()) == 0
    assert not xmp_of(out) and "comment" not in out.info
    assert out.info.get("icc_profile") == icc  # (none here: nothing invented either)
    assert out.size == (48, 64)  # turned upright before the orientation went


def swapped_profile() -> bytes:
    """An RGB profile whose red and green primaries are swapped (pikepdf's sRGB with two
    tag entries exchanged): converted to sRGB, red pixels come out green."""
    import struct

    data = bytearray((Path(pikepdf.__file__).parent / "pdfa" / "data" / "sRGB.icc").read_bytes())
    entries = {
        bytes(data[132 + 12 * i : 136 + 12 * i]): 132 + 12 * i
        for i in range(struct.unpack(">I", data[128:132])[0])
    }
    red, green = entries[b"rXYZ"], entries[b"gXYZ"]
    data[red + 4 : red + 12], data[green + 4 : green + 12] = (
        data[green + 4 : green + 12],
        data[red + 4 : red + 12],
    )
    return bytes(data)


def test_strip_keeps_a_colour_profile_or_applies_it(tmp_path: Path) -> None:
    """Colours are not personal data: a profile stays where the format holds one, and is
    applied to the pixels where it cannot (GIF, BMP)."""
    icc = swapped_profile()
    src = tmp_path / "tagged.jpg"
    Image.new("RGB", (16, 16), (200, 30, 40)).save(src, icc_profile=icc, quality=95)
    png = convert_image(src, "png", tmp_path / "png", metadata="strip")
    assert png.info.get("icc_profile") == icc
    assert _near(png.convert("RGB").getpixel((8, 8)), (200, 30, 40))
    for dst in ("gif", "bmp"):
        flat = convert_image(src, dst, tmp_path / dst, metadata="strip")
        assert not flat.info.get("icc_profile")
        assert _near(flat.convert("RGB").getpixel((8, 8)), (30, 200, 40)), dst


def _near(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 24) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def test_the_older_strip_metadata_flag_still_strips(tmp_path: Path) -> None:
    src = geotagged_jpeg(tmp_path / "photo.jpg")
    out = convert_image(src, "jpg", tmp_path / "out", strip_metadata=True)
    assert len(out.getexif()) == 0


def test_an_unknown_mode_is_refused_with_the_choices() -> None:
    with pytest.raises(RequestError) as err:
        Registry([IMAGE]).validate("image", "jpg", "png", {"metadata": "some"})
    assert "no_location" in err.value.hint and "strip" in err.value.hint


# ------------------------------------------------------------------------ video and audio


def geotagged_media(path: Path, fmt: str) -> Path:
    """A second of picture (or only sound for m4a) with a title and a location atom."""
    video = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=1"] if fmt != "m4a" else []
    muxer = {"mp4": "mp4", "mov": "mov", "m4a": "ipod"}[fmt]
    ffmpeg(*video, "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
           *(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"] if video else []),
           "-c:a", "aac", "-metadata", f"location={PLACE}", "-metadata", "title=Beach walk",
           "-metadata", "artist=Someone", "-f", muxer, str(path))  # fmt: skip
    return path


def tags_of(path: Path) -> dict[str, str]:
    found = ffprobe(path, "-show_entries", "format_tags:stream_tags")
    tags = dict(found["format"].get("tags") or {})
    for stream in found["streams"]:
        tags.update({f"stream:{k}": v for k, v in (stream.get("tags") or {}).items()})
    return tags


def has_place(tags: dict[str, str]) -> bool:
    return any("location" in k.lower() or PLACE in v for k, v in tags.items())


MEDIA_PAIRS = [
    (VideoConverter(), "mov", "mp4"),
    (VideoConverter(), "mp4", "mov"),
    (VideoConverter(), "mov", "mkv"),
    (VideoConverter(), "mov", "m4a"),  # the sound of a phone video
    (AudioConverter(), "m4a", "m4a"),
    (AudioConverter(), "m4a", "mp3"),
]


@pytest.mark.parametrize(("conv", "src", "dst"), MEDIA_PAIRS, ids=[f"{s}-{d}" for _, s, d in MEDIA_PAIRS])
def test_media_location_follows_the_policy(conv, src: str, dst: str, tmp_path: Path) -> None:
    source = geotagged_media(tmp_path / f"in.{src}", src)
    assert has_place(tags_of(source))  # the input really carries it
    seen = {}
    for mode in ("no_location", "keep", "strip"):
        options = Registry([conv]).validate(conv.filetype, src, dst, {"metadata": mode})
        task = task_for(source, src, dst, tmp_path / mode, options)
        conv.check(task)
        seen[mode] = tags_of(conv.convert(task).path)
    assert not has_place(seen["no_location"]) and seen["no_location"].get("title") == "Beach walk"
    assert has_place(seen["keep"]) and seen["keep"].get("title") == "Beach walk"
    assert not has_place(seen["strip"]) and "title" not in seen["strip"] and "artist" not in seen["strip"]


def test_media_default_is_no_location() -> None:
    for conv, src, dst in MEDIA_PAIRS:
        assert Registry([conv]).validate(conv.filetype, src, dst, {})["metadata"] == "no_location"


# ------------------------------------------------------------------------ through the service


async def test_formats_show_the_option_with_its_schema(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    async with http.get(f"{base_url}/v1/formats?options=1", headers={"X-API-Key": account.key}) as resp:
        filetypes = (await resp.json())["filetypes"]
    for filetype, src, dst in (("image", "jpg", "webp"), ("image", "heic", "jpg"), ("video", "mov", "mp4"),
                               ("audio", "m4a", "mp3")):  # fmt: skip
        option = filetypes[filetype]["conversions"][src][dst]["properties"]["metadata"]
        assert option["type"] == "string" and option["default"] == "no_location", (filetype, option)
        assert option["enum"] == ["no_location", "keep", "strip"]


async def test_the_formats_query_shows_the_option_too(gql: GraphQL, account: Account) -> None:
    for filetype, src, dst in (("image", "png", "avif"), ("video", "mp4", "webm"), ("audio", "wav", "m4a")):
        variables = {"filetype": filetype, "inputFormat": src, "outputFormat": dst}
        schema = (await gql(operation("FormatOptions"), variables, key=account.key))["data"]["formatOptions"]
        option = schema["properties"]["metadata"]
        assert option["enum"] == ["no_location", "keep", "strip"] and option["default"] == "no_location"


async def test_a_photo_sent_to_the_service_loses_its_location(
    http: aiohttp.ClientSession, base_url: str, account: Account, tmp_path: Path
) -> None:
    src = geotagged_jpeg(tmp_path / "photo.jpg")
    for options, located in (("{}", False), ('{"metadata": "keep"}', True)):
        form = aiohttp.FormData()
        form.add_field("file", src.read_bytes(), filename="photo.jpg")
        form.add_field("filetype", "image")
        form.add_field("output_format", "jpg")
        form.add_field("options", options)
        async with http.post(f"{base_url}/v1/convert", data=form, headers={"X-API-Key": account.key}) as resp:
            job = await resp.json()
        assert resp.status in (200, 201, 202), job
        status = await wait_for_status(http, base_url, account.key, job["job_id"])
        assert status["status"] == "finished", json.dumps(status)
        async with http.get(
            f"{base_url}/v1/download/{job['job_id']}", headers={"X-API-Key": account.key}
        ) as r:
            body = await r.read()
        out = tmp_path / f"out-{located}.jpg"
        out.write_bytes(body)
        exif = Image.open(out).getexif()
        assert bool(exif.get_ifd(GPS)) is located and exif[MAKE] == "TestCam"


async def test_through_the_sandbox(tmp_path: Path) -> None:
    src = geotagged_jpeg(tmp_path / "photo.jpg")
    result = await sandbox.run("image", "jpg", "webp", {}, [src], tmp_path / "job")
    exif = Image.open(result.path).getexif()
    assert exif[MAKE] == "TestCam" and not exif.get_ifd(GPS)

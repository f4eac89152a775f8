"""Animations stay animated: GIF, animated WebP, APNG and animated AVIF between each other
with their frames, frame durations and loop count; to still formats one frame; to mp4 and
webm through the video family with their timing.

Animations are made here with Pillow: frames of different colours (an encoder may merge
identical neighbours) and durations that differ frame to frame, in 10 ms steps (GIF counts
in hundredths of a second). Outputs are read back with Pillow, and videos with ffprobe and
ffmpeg.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from converters.base import ConversionError, Task
from converters.filetypes.image.converter import ANIMATION_SECONDS_LIMIT, WRITE, ImageConverter
from converters.filetypes.video import VideoConverter
from converters.registry import Registry
from converters.sandbox import parent as sandbox
from tests.converters.samples_media import decoded_frames, ffprobe

IMAGE, VIDEO = ImageConverter(), VideoConverter()
SIZE = (64, 48)
COLOURS = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (240, 220, 20), (200, 40, 200)]
DURATIONS = [100, 200, 300, 400, 500]  # ms; 1.5 s in all
ANIMATED = ("gif", "webp", "png", "avif")


def animation(path: Path, fmt: str, loop: int = 0) -> Path:
    frames = [Image.new("RGB", SIZE, c) for c in COLOURS]
    frames[0].save(path, WRITE[fmt], save_all=True, append_images=frames[1:], duration=DURATIONS, loop=loop)
    return path


def frames_of(path: Path) -> tuple[list[int], list[tuple[int, int, int]], int | None]:
    """Durations (ms), the colour at the centre of each frame, and the loop count."""
    durations, colours = [], []
    with Image.open(path) as im:
        for index in range(getattr(im, "n_frames", 1)):
            im.seek(index)
            im.load()
            durations.append(round(float(im.info.get("duration") or 0)))
            colours.append(im.convert("RGB").getpixel((32, 24)))
        return durations, colours, im.info.get("loop")


def convert(src: Path, in_fmt: str, out_fmt: str, workdir: Path, **options: object) -> Path:
    workdir.mkdir(parents=True)
    values = Registry([IMAGE]).validate("image", in_fmt, out_fmt, options)
    task = Task([src], in_fmt, out_fmt, values, workdir)
    IMAGE.check(task)
    return IMAGE.convert(task).path


def near(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


PAIRS = [(s, d) for s in ANIMATED for d in ANIMATED if s != d]


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_animation_kept_between_animated_formats(src: str, dst: str, tmp_path: Path) -> None:
    path = animation(tmp_path / f"anim.{src}", src)
    durations, colours, loop = frames_of(convert(path, src, dst, tmp_path / "out"))
    assert durations == DURATIONS
    assert len(colours) == len(COLOURS) and all(near(a, b) for a, b in zip(colours, COLOURS, strict=True))
    if dst != "avif":  # (Pillow does not read an AVIF's repetition count back)
        assert loop == 0  # forever, as the source


@pytest.mark.parametrize("dst", ["webp", "png"])
def test_loop_count_kept(dst: str, tmp_path: Path) -> None:
    path = animation(tmp_path / "thrice.gif", "gif", loop=3)
    assert frames_of(convert(path, "gif", dst, tmp_path / "out"))[2] == 3


def test_a_gif_that_plays_once_still_plays_once(tmp_path: Path) -> None:
    frames = [Image.new("RGB", SIZE, c) for c in COLOURS]
    path = tmp_path / "once.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=DURATIONS)  # no loop block
    assert frames_of(path)[2] is None
    assert frames_of(convert(path, "gif", "webp", tmp_path / "webp"))[2] == 1
    assert frames_of(convert(path, "gif", "png", tmp_path / "png"))[2] == 1
    assert frames_of(convert(path, "gif", "gif", tmp_path / "gif"))[2] is None


def test_gif_with_partial_frames_is_composited(tmp_path: Path) -> None:
    """An optimised GIF stores only what changes; each output frame must be whole."""
    base = Image.new("RGB", SIZE, (255, 255, 255))
    dot = Image.new("RGB", (8, 8), (200, 0, 0))
    frames = [base]
    for step in range(1, 4):
        frame = frames[-1].copy()
        frame.paste(dot, (step * 12, 20))
        frames.append(frame)
    path = tmp_path / "trail.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, optimize=True)
    out = Image.open(convert(path, "gif", "webp", tmp_path / "out"))
    out.seek(3)
    last = out.convert("RGB")
    assert all(near(last.getpixel((step * 12 + 4, 24)), (200, 0, 0)) for step in (1, 2, 3))


@pytest.mark.parametrize("src", ANIMATED)
def test_still_output_takes_the_first_or_the_chosen_frame(src: str, tmp_path: Path) -> None:
    path = animation(tmp_path / f"anim.{src}", src)
    first = Image.open(convert(path, src, "jpg", tmp_path / "first"))
    assert near(first.getpixel((32, 24)), COLOURS[0])
    third = Image.open(convert(path, src, "png", tmp_path / "third", page=3))
    assert getattr(third, "n_frames", 1) == 1 and near(third.convert("RGB").getpixel((32, 24)), COLOURS[2])


def test_an_animation_playing_too_long_is_refused(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), (30 * i, 0, 0)) for i in range(7)]
    path = tmp_path / "long.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=655_000, loop=0)  # 7 x 655 s
    with pytest.raises(ConversionError, match=f"over {ANIMATION_SECONDS_LIMIT} seconds") as err:
        convert(path, "gif", "webp", tmp_path / "out")
    assert "mp4" in (err.value.hint or "")
    # one frame of it is fine
    assert Image.open(convert(path, "gif", "webp", tmp_path / "one", page=2)).size == (8, 8)


# ------------------------------------------------------------------------ to video


def video_frames(path: Path) -> tuple[list[float], float, list[tuple[int, int, int]]]:
    """Frame start times (s), the container's duration (s) and each frame's centre colour."""
    frames = decoded_frames(path)
    duration = float(ffprobe(path, "-show_entries", "format=duration")["format"]["duration"])
    return [round(t, 3) for t, _ in frames], duration, [p.getpixel((32, 24)) for _, p in frames]


@pytest.mark.parametrize("src", ["gif", "webp"])
@pytest.mark.parametrize("dst", ["mp4", "webm"])
def test_animated_image_to_video_keeps_frames_and_timing(src: str, dst: str, tmp_path: Path) -> None:
    path = animation(tmp_path / f"anim.{src}", src)
    workdir = tmp_path / "out"
    workdir.mkdir()
    options = Registry([VIDEO]).validate("video", src, dst, {"preset": "fast"})
    task = Task([path], src, dst, options, workdir)
    VIDEO.check(task)
    times, duration, colours = video_frames(VIDEO.convert(task).path)
    assert times == [0.0, 0.1, 0.3, 0.6, 1.0]  # each frame starts when the source's did
    assert abs(duration - 1.5) < 0.02  # and the last one lasts its 500 ms
    assert all(near(a, b, 48) for a, b in zip(colours, COLOURS, strict=True))


def test_animated_images_have_no_sound_outputs() -> None:
    pairs = VIDEO.pairs()
    assert pairs["webp"] == pairs["gif"] and "mp3" not in pairs["webp"] and "mp4" in pairs["webp"]


@pytest.mark.parametrize("side", [8000, 20000])
def test_a_webp_declaring_huge_frames_is_refused_before_decoding(side: int, tmp_path: Path) -> None:
    data = bytearray(animation(tmp_path / "small.webp", "webp").read_bytes())
    at = data.index(b"VP8X") + 12  # canvas width - 1 and height - 1, 24 bits each
    data[at : at + 6] = (side - 1).to_bytes(3, "little") * 2
    path = tmp_path / "huge.webp"
    path.write_bytes(bytes(data))
    task = Task([path], "webp", "mp4", {}, tmp_path)
    with pytest.raises(ConversionError, match="million pixel limit"):
        VIDEO.check(task)


async def test_transparent_gif_becomes_a_video_on_white(tmp_path: Path) -> None:
    frames = []
    for step in range(3):
        frame = Image.new("RGBA", SIZE, (0, 0, 0, 0))
        frame.paste((200, 30, 40, 255), (16 + 4 * step, 12, 40 + 4 * step, 36))
        frames.append(frame)
    for fmt in ("gif", "webp"):
        path = tmp_path / f"sticker.{fmt}"
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, disposal=2)
        result = await sandbox.run("video", fmt, "mp4", {}, [path], tmp_path / f"job-{fmt}")
        first = decoded_frames(result.path)[0][1]
        assert near(first.getpixel((4, 4)), (255, 255, 255), 12), fmt
        assert near(first.getpixel((28, 24)), (200, 30, 40), 30), fmt

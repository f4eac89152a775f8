"""Video converter: every listed pair, codecs and options checked by decoding, progress."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from converters.base import ConversionError, RequestError
from converters.filetypes.video import VideoConverter
from converters.registry import Registry
from converters.tools import ffmpeg_run
from tests.converters.samples_media import (
    SECONDS,
    SILENT_FORMATS,
    SIZE,
    VIDEO_FORMATS,
    decode,
    make,
    task_for,
)
from tests.helpers import pair_matrix

CONV = VideoConverter()
VIDEO_OUTPUTS = ("mp4", "mkv", "webm", "mov", "avi", "gif")
AUDIO_OUTPUTS = ("mp3", "wav", "flac", "ogg", "opus", "m4a", "aac")
SOUND_INPUTS = tuple(f for f in VIDEO_FORMATS if f not in SILENT_FORMATS)
DEFAULT_CODEC = {"mp4": "h264", "mkv": "h264", "webm": "vp9", "mov": "h264", "avi": "mpeg4", "gif": "gif"}
AUDIO_CODEC = {"mp4": "aac", "mkv": "aac", "webm": "opus", "mov": "aac", "avi": "mp3"}
DECODED_NAME = {"h264": "h264", "h265": "hevc", "vp9": "vp9", "av1": "av1", "mpeg4": "mpeg4"}
CODECS = {
    "mp4": ("h264", "h265", "vp9", "av1"),
    "mkv": ("h264", "h265", "vp9", "av1"),
    "webm": ("vp9", "av1"),
    "mov": ("h264", "h265"),
    "avi": ("mpeg4", "h264"),
}
FAST = {"preset": "fast"}


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("video-samples")
    made = {fmt: make(fmt, root / f"sample.{fmt}") for fmt in VIDEO_FORMATS}
    made["silent-mp4"] = make("mp4", root / "silent.mp4", audio=False)
    made["sound-only-mp4"] = make("mp4", root / "sound.mp4", video=False)
    return made


def convert(samples: dict[str, Path], src: str, dst: str, workdir: Path, sample: str = "", **options):
    if dst in VIDEO_OUTPUTS[:-1]:
        options = {**FAST, **options}
    task = task_for(samples[sample or src], src, dst, workdir, options)
    CONV.check(task)
    return CONV.convert(task)


def test_engine_is_available_and_lists_every_pair() -> None:
    assert CONV.unavailable() is None
    pairs = CONV.pairs()
    assert set(pairs) == set(VIDEO_FORMATS)
    for src in SOUND_INPUTS:
        assert pairs[src] == frozenset(VIDEO_OUTPUTS + AUDIO_OUTPUTS), src
    assert pairs["gif"] == pairs["webp"] == frozenset(VIDEO_OUTPUTS)


@pytest.mark.parametrize(("src", "dst"), pair_matrix(VIDEO_FORMATS, VIDEO_OUTPUTS))
def test_every_video_pair_converts(samples, tmp_path, src: str, dst: str) -> None:
    got = decode(convert(samples, src, dst, tmp_path).path)
    assert got.video_codec == DEFAULT_CODEC[dst]
    assert (got.width, got.height) == SIZE
    # the source runs 1.5 s at 10 fps; GIF output defaults to 10 fps as well
    assert 13 <= got.frames <= 17, got
    if dst == "gif" or src in SILENT_FORMATS:
        assert got.audio_codec is None
    else:
        assert got.audio_codec == AUDIO_CODEC[dst]
        assert abs(got.samples / got.sample_rate - SECONDS) < 0.15


@pytest.mark.parametrize("src", SOUND_INPUTS)
@pytest.mark.parametrize("dst", AUDIO_OUTPUTS)
def test_every_sound_extraction_pair(samples, tmp_path, src: str, dst: str) -> None:
    got = decode(convert(samples, src, dst, tmp_path).path)
    assert got.video_codec is None
    assert got.audio_codec is not None and got.channels == 2
    assert abs(got.samples / got.sample_rate - SECONDS) < 0.15


@pytest.mark.parametrize(("dst", "codec"), [(d, c) for d, cs in CODECS.items() for c in cs])
def test_every_codec_encodes(samples, tmp_path, dst: str, codec: str) -> None:
    got = decode(convert(samples, "mp4", dst, tmp_path, codec=codec).path)
    assert got.video_codec == DECODED_NAME[codec]
    assert (got.width, got.height) == SIZE and got.frames >= 13


def test_crf_trades_size_for_quality(samples, tmp_path) -> None:
    fine = convert(samples, "mkv", "mp4", tmp_path / "a", crf=12, audio=False).path.stat().st_size
    coarse = convert(samples, "mkv", "mp4", tmp_path / "b", crf=45, audio=False).path.stat().st_size
    assert fine > 2 * coarse


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ({"width": 64}, (64, 48)),
        ({"height": 48}, (64, 48)),
        ({"width": 100, "height": 100}, (100, 76)),  # fitted, aspect kept, even height
        ({"width": 320, "height": 120}, (160, 120)),
    ],
)
def test_resolution(samples, tmp_path, size, expected) -> None:
    got = decode(convert(samples, "mp4", "mkv", tmp_path, **size).path)
    assert (got.width, got.height) == expected


def test_odd_sizes_become_even_for_420_codecs(samples, tmp_path) -> None:
    odd = make("gif", tmp_path / "odd.gif", size=(101, 75))
    got = decode(convert({"gif": odd}, "gif", "mp4", tmp_path / "w").path)
    assert (got.width, got.height) == (100, 74)


def test_fps(samples, tmp_path) -> None:
    got = decode(convert(samples, "webm", "mp4", tmp_path, fps=5).path)
    assert got.fps == 5
    assert 7 <= got.frames <= 9


@pytest.mark.parametrize("src", VIDEO_FORMATS)
def test_trim(samples, tmp_path, src: str) -> None:
    got = decode(convert(samples, src, "mkv", tmp_path, start=0.5, end=1.0).path)
    assert 4 <= got.frames <= 6
    if src not in SILENT_FORMATS:
        assert abs(got.samples / got.sample_rate - 0.5) < 0.1


def test_trim_to_gif(samples, tmp_path) -> None:
    got = decode(convert(samples, "webm", "gif", tmp_path, start=1.0).path)
    assert 4 <= got.frames <= 6


def test_cover_art_is_not_a_video_track(samples, tmp_path) -> None:
    from tests.converters.samples_media import ffmpeg

    cover = tmp_path / "cover.png"
    ffmpeg("-f", "lavfi", "-i", "color=red:size=64x64", "-frames:v", "1", str(cover))
    song = tmp_path / "song.mp4"
    ffmpeg(
        "-i",
        str(samples["sound-only-mp4"]),
        "-i",
        str(cover),
        "-map",
        "0:a",
        "-map",
        "1",
        "-c:a",
        "copy",
        "-c:v",
        "png",
        "-disposition:v",
        "attached_pic",
        str(song),
    )
    task = task_for(song, "mp4", "gif", tmp_path / "w")
    with pytest.raises(ConversionError, match="no video track"):
        CONV.check(task)
    got = decode(convert({"mp4": song}, "mp4", "mp3", tmp_path / "x").path)
    assert got.audio_codec == "mp3" and got.video_codec is None


def test_audio_off_removes_the_track(samples, tmp_path) -> None:
    got = decode(convert(samples, "mov", "mp4", tmp_path, audio=False).path)
    assert got.audio_codec is None and got.frames >= 13


def test_gif_fps_and_width(samples, tmp_path) -> None:
    got = decode(convert(samples, "mp4", "gif", tmp_path, fps=5, width=64).path)
    assert (got.width, got.height) == (64, 48)
    assert 7 <= got.frames <= 9


def test_gif_default_width_never_upscales_and_caps_wide_sources(samples, tmp_path) -> None:
    wide = make("mp4", tmp_path / "wide.mp4", size=(640, 360), seconds=0.5, audio=False)
    got = decode(convert({"mp4": wide}, "mp4", "gif", tmp_path / "w").path)
    assert (got.width, got.height) == (480, 270)


def test_extraction_options_apply(samples, tmp_path) -> None:
    got = decode(convert(samples, "mkv", "mp3", tmp_path, channels=1, sample_rate=22050, start=0.5).path)
    assert (got.channels, got.sample_rate) == (1, 22050)
    assert abs(got.samples / got.sample_rate - 1.0) < 0.1


def test_no_audio_track_is_a_clear_error(samples, tmp_path) -> None:
    task = task_for(samples["silent-mp4"], "mp4", "mp3", tmp_path)
    with pytest.raises(ConversionError, match="The file has no audio track"):
        CONV.check(task)


def test_no_video_track_is_a_clear_error(samples, tmp_path) -> None:
    for dst in ("gif", "webm"):
        task = task_for(samples["sound-only-mp4"], "mp4", dst, tmp_path / dst)
        with pytest.raises(ConversionError, match="The file has no video track"):
            CONV.check(task)


@pytest.mark.slow  # a long clip encoded to watch the progress
def test_progress_rises_from_ffmpeg_output(tmp_path) -> None:
    long = make("mp4", tmp_path / "long.mp4", size=(320, 240), seconds=8)
    seen: list[float] = []
    task = task_for(
        long, "mp4", "mkv", tmp_path / "w", {"preset": "slow", "codec": "h265"}, progress=seen.append
    )
    CONV.check(task)
    CONV.convert(task)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert seen[-1] == 1.0
    assert len([p for p in seen if 0 < p < 1]) >= 3, seen


def test_progress_accounts_for_trim(tmp_path) -> None:
    long = make("mp4", tmp_path / "long.mp4", size=(320, 240), seconds=8)
    seen: list[float] = []
    task = task_for(
        long,
        "mp4",
        "mp4",
        tmp_path / "w",
        {"preset": "slow", "start": 5.0, "codec": "h265"},
        progress=seen.append,
    )
    CONV.convert(task)
    # 3 s of output: a fraction of the whole 8 s file would stop near 0.4
    assert max(p for p in seen if p < 1) > 0.6, seen


def test_options_are_published_and_validated() -> None:
    reg = Registry([CONV])
    props = reg.options_schema("video", "mov", "webm")["properties"]
    assert props["codec"]["enum"] == ["vp9", "av1"] and props["codec"]["default"] == "vp9"
    assert {"crf", "preset", "width", "height", "fps", "start", "end", "audio"} <= set(props)
    gif = reg.options_schema("video", "mp4", "gif")["properties"]
    assert set(gif) == {"fps", "width", "start", "end"}
    assert "bitrate" in reg.options_schema("video", "mp4", "mp3")["properties"]
    for bad in ({"codec": "h264"}, {"crf": 99}, {"fps": 0}, {"audio": "no"}):
        with pytest.raises(RequestError):
            reg.validate("video", "mp4", "webm", bad)
    with pytest.raises(RequestError):
        reg.find("video", "gif", "mp3")


_UNDER_LIMIT = """
import json, resource, sys
from pathlib import Path
from converters.base import Task
from converters.filetypes.video import VideoConverter
conv = VideoConverter()
limit = conv.limits.memory_bytes
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # ffmpeg inherits it, as in the sandbox
src, work, codec = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
task = Task([src], "mp4", "mkv", {"codec": codec, "preset": "medium"}, work)
conv.check(task)
print(json.dumps(str(conv.convert(task).path)))
"""


@pytest.mark.slow  # 3-7 s each: the heaviest encoders at their memory limit
@pytest.mark.parametrize("codec", ["h265", "av1", "vp9"])
def test_heavy_encoders_fit_the_memory_limit(tmp_path, codec: str) -> None:
    src = make("mp4", tmp_path / "hd.mp4", size=(1920, 1080), seconds=0.3, audio=False)
    work = tmp_path / "w"
    work.mkdir()
    run = subprocess.run(
        [sys.executable, "-c", _UNDER_LIMIT, str(src), str(work), codec],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[4],
    )
    assert run.returncode == 0, run.stderr[-2000:]
    got = decode(Path(json.loads(run.stdout)))
    assert got.video_codec == DECODED_NAME[codec] and (got.width, got.height) == (1920, 1080)


@pytest.mark.slow  # a long clip through the sandbox
async def test_through_the_sandbox_progress_rises(tmp_path) -> None:
    from converters.sandbox import parent as sandbox

    long = make("mp4", tmp_path / "long.mp4", size=(320, 240), seconds=8)
    seen: list[float] = []

    async def on_progress(value: float) -> None:
        seen.append(value)

    result = await sandbox.run(
        "video", "mp4", "mkv", {"codec": "h265", "preset": "slow"}, [long], tmp_path / "job", on_progress
    )
    got = decode(result.path)
    assert (got.video_codec, got.width, got.height) == ("hevc", 320, 240)
    assert got.frames == 80 and got.audio_codec == "aac"
    assert seen == sorted(set(seen)) and seen[-1] == 1.0
    assert len([p for p in seen if 0 < p < 1]) >= 3, seen


async def test_through_the_sandbox_video_to_sound(samples, tmp_path) -> None:
    from converters.sandbox import parent as sandbox

    result = await sandbox.run("video", "webm", "opus", {"bitrate": 64}, [samples["webm"]], tmp_path / "job")
    got = decode(result.path)
    assert got.audio_codec == "opus" and got.video_codec is None


def test_missing_encoders_remove_their_formats(monkeypatch) -> None:
    from converters.tools import ffmpeg_run

    have = ffmpeg_run.encoders() - {"libx265", "libopus"}
    monkeypatch.setattr(ffmpeg_run, "encoders", lambda: have)
    pairs = CONV.pairs()["mp4"]
    assert "webm" not in pairs and "opus" not in pairs  # webm's sound is Opus
    assert {"mp4", "mkv", "gif", "mp3"} <= pairs
    assert CONV.options("mp4", "mkv")["codec"].enum == ("h264", "vp9", "av1")
    missing = CONV.unavailable_formats()
    assert "libopus" in missing["webm"] and "libopus" in missing["opus"]
    assert "libx265" in missing["mp4+h265"]


def test_missing_ffmpeg_is_reported_not_offered(monkeypatch) -> None:
    from converters.filetypes import audio

    monkeypatch.setattr(ffmpeg_run, "ffmpeg_missing", lambda: "no ffmpeg binary here")
    reg = Registry([CONV, audio.AudioConverter()])
    assert reg.filetypes == []
    assert reg.missing == {"video:ffmpeg": "no ffmpeg binary here", "audio:ffmpeg": "no ffmpeg binary here"}

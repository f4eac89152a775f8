"""Audio converter: every listed pair on a real file, options that really apply, clear errors."""

from __future__ import annotations

import array
import math
import wave
from pathlib import Path

import pytest

from converters.base import ConversionError, RequestError
from converters.filetypes.audio import AudioConverter
from converters.registry import Registry
from tests.converters.samples_media import (
    AUDIO_FORMATS,
    SECONDS,
    SILENT_FORMATS,
    VIDEO_FORMATS,
    decode,
    make,
    task_for,
)
from tests.helpers import pair_matrix

CONV = AudioConverter()
OUTPUTS = ("mp3", "wav", "flac", "ogg", "opus", "m4a", "aac")
INPUTS = AUDIO_FORMATS + tuple(f for f in VIDEO_FORMATS if f not in SILENT_FORMATS)
CODEC = {
    "mp3": "mp3",
    "wav": "pcm_s16le",
    "flac": "flac",
    "ogg": "vorbis",
    "opus": "opus",
    "m4a": "aac",
    "aac": "aac",
}
CONTAINER = {
    "mp3": "mp3",
    "wav": "wav",
    "flac": "flac",
    "ogg": "ogg",
    "opus": "ogg",
    "m4a": "mov,mp4,m4a,3gp,3g2,mj2",
    "aac": "aac",
}


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audio-samples")
    made = {fmt: make(fmt, root / f"sample.{fmt}") for fmt in INPUTS}
    made["silent-mp4"] = make("mp4", root / "silent.mp4", audio=False)
    return made


def convert(samples: dict[str, Path], fmt: str, out: str, workdir: Path, **options):
    task = task_for(samples[fmt], fmt, out, workdir, options)
    CONV.check(task)
    return CONV.convert(task)


def test_engine_is_available_and_lists_every_pair() -> None:
    assert CONV.unavailable() is None
    pairs = CONV.pairs()
    assert set(pairs) == set(INPUTS)
    for src in INPUTS:
        assert pairs[src] == frozenset(OUTPUTS), src


@pytest.mark.parametrize(("src", "dst"), pair_matrix(INPUTS, OUTPUTS))
def test_every_pair_converts(samples, tmp_path, src: str, dst: str) -> None:
    result = convert(samples, src, dst, tmp_path)
    assert result.path.parent == tmp_path and result.path.suffix == f".{dst}"
    got = decode(result.path)
    assert got.format == CONTAINER[dst]
    assert got.audio_codec == CODEC[dst]
    assert got.video_codec is None
    assert got.channels == 2
    assert got.samples > 0
    assert abs(got.samples / got.sample_rate - SECONDS) < 0.15, got


@pytest.mark.parametrize(("dst", "kbps"), [("mp3", 64), ("mp3", 256), ("m4a", 96), ("ogg", 96)])
def test_bitrate_applies(samples, tmp_path, dst: str, kbps: int) -> None:
    got = decode(convert(samples, "wav", dst, tmp_path, bitrate=kbps).path)
    # encoders land near the asked rate, never at the other end of the range
    assert 0.6 * kbps * 1000 <= got.bit_rate <= 1.4 * kbps * 1000, got.bit_rate


def test_lower_bitrate_gives_smaller_file(samples, tmp_path) -> None:
    low = convert(samples, "flac", "mp3", tmp_path / "a", bitrate=32).path.stat().st_size
    high = convert(samples, "flac", "mp3", tmp_path / "b", bitrate=320).path.stat().st_size
    assert high > 4 * low


@pytest.mark.parametrize(
    ("dst", "rate"),
    [("mp3", 22050), ("wav", 16000), ("flac", 96000), ("opus", 24000), ("aac", 32000), ("ogg", 8000)],
)
def test_sample_rate_applies(samples, tmp_path, dst: str, rate: int) -> None:
    got = decode(convert(samples, "wav", dst, tmp_path, sample_rate=rate).path)
    if dst == "opus":
        # Opus always decodes at 48 kHz; the encoder's input rate is in the header only
        assert got.sample_rate == 48000
    else:
        assert got.sample_rate == rate
    assert abs(got.samples / got.sample_rate - SECONDS) < 0.15


@pytest.mark.parametrize("dst", ["mp3", "wav", "opus", "m4a"])
def test_channels_downmix_to_mono(samples, tmp_path, dst: str) -> None:
    assert decode(samples["wav"]).channels == 2
    got = decode(convert(samples, "wav", dst, tmp_path, channels=1).path)
    assert got.channels == 1


def test_upmix_to_six_channels(samples, tmp_path) -> None:
    assert decode(convert(samples, "mp3", "flac", tmp_path, channels=6).path).channels == 6


@pytest.mark.parametrize("src", INPUTS)
def test_trim_keeps_only_the_window(samples, tmp_path, src: str) -> None:
    got = decode(convert(samples, src, "wav", tmp_path, start=0.5, end=1.2).path)
    assert abs(got.samples / got.sample_rate - 0.7) < 0.05


def test_trim_start_only_and_end_only(samples, tmp_path) -> None:
    tail = decode(convert(samples, "flac", "wav", tmp_path / "a", start=1.0).path)
    head = decode(convert(samples, "flac", "wav", tmp_path / "b", end=0.4).path)
    assert abs(tail.samples / tail.sample_rate - (SECONDS - 1.0)) < 0.05
    assert abs(head.samples / head.sample_rate - 0.4) < 0.05


def _rms(path: Path) -> float:
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2
        data = array.array("h", w.readframes(w.getnframes()))
    return math.sqrt(sum(s * s for s in data) / len(data)) / 32768


def test_normalize_raises_a_quiet_file(tmp_path) -> None:
    from tests.converters.samples_media import ffmpeg

    quiet = tmp_path / "quiet.wav"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100:duration=3",
        "-af",
        "volume=0.01",
        "-c:a",
        "pcm_s16le",
        str(quiet),
    )
    plain = convert({"wav": quiet}, "wav", "wav", tmp_path / "a").path
    loud = convert({"wav": quiet}, "wav", "wav", tmp_path / "b", normalize=True).path
    assert _rms(loud) > 5 * _rms(plain)
    # loudnorm works at 192 kHz internally; the output keeps the source's rate
    assert decode(loud).sample_rate == 44100


def test_progress_rises_to_one(samples, tmp_path) -> None:
    seen: list[float] = []
    task = task_for(samples["wav"], "wav", "mp3", tmp_path, {}, progress=seen.append)
    CONV.check(task)
    CONV.convert(task)
    assert seen and seen[-1] == 1.0
    assert seen == sorted(seen)


def test_video_without_sound_is_refused(samples, tmp_path) -> None:
    task = task_for(samples["silent-mp4"], "mp4", "mp3", tmp_path)
    with pytest.raises(ConversionError, match="no audio track"):
        CONV.check(task)


def test_declared_type_must_match_content(samples, tmp_path) -> None:
    task = task_for(samples["wav"], "mp3", "ogg", tmp_path)
    with pytest.raises(ConversionError, match="not mp3") as err:
        CONV.check(task)
    assert "wav" in err.value.message


def test_same_container_family_is_accepted(samples, tmp_path) -> None:
    # an m4a is an mp4 without pictures: declaring one as the other is fine
    got = decode(convert({"m4a": samples["mp4"]}, "m4a", "mp3", tmp_path).path)
    assert got.audio_codec == "mp3"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"start": 5.0}, "past the end"),
    ],
)
def test_bad_trim_is_refused_before_converting(samples, tmp_path, options, match) -> None:
    task = task_for(samples["wav"], "wav", "mp3", tmp_path, options)
    with pytest.raises(ConversionError, match=match):
        CONV.check(task)
    assert not list(tmp_path.glob("converted*"))


def test_options_are_published_and_validated() -> None:
    reg = Registry([CONV])
    schema = reg.options_schema("audio", "wav", "opus")["properties"]
    assert schema["bitrate"]["minimum"] == 16 and schema["bitrate"]["maximum"] == 256
    assert 44100 not in schema["sample_rate"]["enum"]
    assert set(schema) == {"bitrate", "sample_rate", "channels", "start", "end", "normalize", "metadata"}
    assert "bitrate" not in reg.options_schema("audio", "mp3", "flac")["properties"]
    assert reg.validate("audio", "mp4", "mp3", {})["bitrate"] == 192
    for bad in (
        {"bitrate": 1000},
        {"sample_rate": 44100},
        {"channels": 3},
        {"start": -1},
        {"start": 1, "end": 0.5},
    ):
        with pytest.raises(RequestError):
            reg.validate("audio", "wav", "opus", bad)


async def test_through_the_sandbox(samples, tmp_path) -> None:
    from converters.sandbox import parent as sandbox

    result = await sandbox.run(
        "audio", "wma", "m4a", {"channels": 1, "start": 0.5}, [samples["wma"]], tmp_path / "job"
    )
    got = decode(result.path)
    assert (got.audio_codec, got.channels) == ("aac", 1)
    assert abs(got.samples / got.sample_rate - (SECONDS - 0.5)) < 0.1

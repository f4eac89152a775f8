"""converters.tools.media_wav: a plain PCM WAV described from its header says what ffprobe
says of it; every other WAV is left to ffprobe."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from converters.base import ConversionError
from converters.tools import media_probe, media_wav
from tests.converters.samples_media import ffmpeg

TONE = ("-f", "lavfi", "-i", "sine=frequency=440:duration=1.25")


def _wav(path: Path, *args: str) -> Path:
    ffmpeg(*TONE, *args, str(path))
    return path


def _by_ffprobe(path: Path, monkeypatch: pytest.MonkeyPatch) -> media_probe.MediaInfo:
    with monkeypatch.context() as m:
        m.setattr(media_wav, "describe", lambda p: None)
        media_probe._probe.cache_clear()
        return media_probe.probe(path, "wav")


@pytest.mark.parametrize(
    "args",
    [
        ("-ac", "2"),
        ("-ac", "1", "-ar", "8000", "-c:a", "pcm_u8"),
        ("-ac", "2", "-ar", "22050", "-c:a", "pcm_s16le"),
        ("-ac", "1", "-c:a", "pcm_f64le", "-fflags", "+bitexact"),  # no INFO chunk at all
        ("-ac", "2", "-metadata", "title=Song", "-metadata", "artist=Me", "-metadata", "comment=x"),
    ],
)
def test_plain_wavs_are_described_as_ffprobe_does(tmp_path, monkeypatch, args) -> None:
    path = _wav(tmp_path / "a.wav", *args)
    mine = media_wav.describe(path)
    assert mine is not None
    theirs = _by_ffprobe(path, monkeypatch)
    assert (mine.demuxer, mine.audio, mine.video) == (theirs.demuxer, theirs.audio, theirs.video)
    assert mine.duration == pytest.approx(theirs.duration, abs=1e-3)
    assert sorted(mine.tags) == sorted(theirs.tags)


@pytest.mark.parametrize(
    "args",
    [
        ("-ac", "6"),  # WAVE_FORMAT_EXTENSIBLE
        ("-ac", "2", "-c:a", "pcm_s24le"),  # extensible too (as are rates over 48 kHz)
        ("-ac", "2", "-rf64", "always"),
        ("-ac", "2", "-c:a", "adpcm_ms"),
        ("-ac", "2", "-write_bext", "1"),
    ],
)
def test_other_wavs_are_left_to_ffprobe(tmp_path, args) -> None:
    assert media_wav.describe(_wav(tmp_path / "a.wav", *args)) is None


def _data_at(path: Path) -> int:
    return path.read_bytes().index(b"data") + 8


def test_lying_or_odd_headers_are_left_to_ffprobe(tmp_path) -> None:
    base = _wav(tmp_path / "a.wav", "-ac", "2")
    data = base.read_bytes()
    cases = {
        # the data chunk claims more than the file holds (truncated upload)
        "truncated": data[: len(data) // 2],
        # 200 channels
        "channels": data[:22] + struct.pack("<H", 200) + data[24:],
        # a DTS sync word at the start of the samples: ffmpeg would decode DTS
        "dts": data[: _data_at(base)] + b"\x7f\xfe\x80\x01" + data[_data_at(base) + 4 :],
        # a location-like INFO tag name: the metadata policy needs ffprobe's exact names
        "gps": data.replace(b"ISFT", b"GPS\0"),
        "not riff": b"RIFX" + data[4:],
    }
    # deeper in the first 64 KiB of samples, where ffmpeg still looks for a bitstream
    at = _data_at(base) + 60_000
    cases["ac-3 deeper"] = data[:at] + b"\x72\xf8\x1f\x4e" + data[at + 4 :]
    # 78 KiB of padding pushes the samples ffmpeg looks into past what is read
    fmt_end = data.index(b"LIST")
    junk = b"JUNK" + struct.pack("<I", 78 * 1024) + bytes(78 * 1024)
    cases["padded"] = data[:fmt_end] + junk + data[fmt_end:]
    for name, content in cases.items():
        path = tmp_path / f"{name}.wav"
        path.write_bytes(content)
        assert media_wav.describe(path) is None, name


def test_a_wav_that_is_really_something_else_is_still_refused(tmp_path) -> None:
    mp3 = tmp_path / "a.mp3"
    ffmpeg(*TONE, str(mp3))
    fake = tmp_path / "fake.wav"
    fake.write_bytes(mp3.read_bytes())
    media_probe._probe.cache_clear()
    with pytest.raises(ConversionError, match="not wav"):
        media_probe.probe(fake, "wav")


def test_a_job_on_a_plain_wav_starts_no_ffprobe(tmp_path, monkeypatch) -> None:
    path = _wav(tmp_path / "a.wav", "-ac", "2")
    monkeypatch.setattr(media_probe, "_ffprobe", lambda *a, **k: pytest.fail("ffprobe started"))
    media_probe._probe.cache_clear()
    info = media_probe.probe(path, "wav")
    assert info.audio is not None and info.audio.channels == 2

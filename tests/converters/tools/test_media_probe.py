"""converters.tools.media_probe.probe: what the ffprobe program says about each input format.

Samples are made with the bundled ffmpeg; the expected facts are the ones they were made
with. The hostile inputs (playlists, bombs, damaged files) are in test_media_hostile.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from converters.base import ConversionError, Task
from converters.filetypes.audio import AudioConverter
from converters.filetypes.video import VideoConverter
from converters.tools import ffmpeg_run, media, media_probe
from tests.converters.samples_media import (
    AUDIO_FORMATS,
    SECONDS,
    SILENT_FORMATS,
    SIZE,
    VIDEO_FORMATS,
    ffmpeg,
    make,
)


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("probe")


@pytest.mark.parametrize("fmt", AUDIO_FORMATS + VIDEO_FORMATS)
def test_each_input_format_is_described(fmt: str, samples: Path) -> None:
    info = media_probe.probe(make(fmt, samples / f"sample.{fmt}"), fmt)
    assert info.demuxer == media.DEMUXERS[fmt]
    assert info.duration is not None and abs(info.duration - SECONDS) < 0.2, info
    if fmt in AUDIO_FORMATS:
        assert info.video is None
    else:
        assert info.video is not None and (info.video.width, info.video.height) == SIZE, info
        assert info.video.fps == pytest.approx(10, abs=0.5), info
    if fmt in SILENT_FORMATS:
        assert info.audio is None
    else:
        assert info.audio is not None, info
        # the samples are 44.1 kHz stereo; Opus (in opus, mkv and webm) is always 48 kHz
        rate = 48000 if fmt in ("opus", "mkv", "webm") else 44100
        assert (info.audio.sample_rate, info.audio.channels) == (rate, 2), info


def test_cover_art_is_not_a_video_track(tmp_path: Path) -> None:
    song = make("mp3", tmp_path / "song.mp3")
    ffmpeg("-f", "lavfi", "-i", "color=red:size=64x64", "-frames:v", "1", str(tmp_path / "cover.png"))
    tagged = tmp_path / "tagged.mp3"
    ffmpeg("-i", str(song), "-i", str(tmp_path / "cover.png"), "-map", "0", "-map", "1", "-c", "copy",
           "-disposition:v", "attached_pic", "-metadata", "title=Song", str(tagged))  # fmt: skip
    info = media_probe.probe(tagged, "mp3")
    assert info.video is None and info.audio is not None
    assert "title" in info.tags
    task = Task([tagged], "mp3", "mp4", {}, tmp_path)
    with pytest.raises(ConversionError, match="no video track"):
        VideoConverter().check(task)


def test_tag_names_of_the_container_and_streams(tmp_path: Path) -> None:
    src = make("mkv", tmp_path / "clip.mkv")
    tagged = tmp_path / "tagged.mkv"
    ffmpeg("-i", str(src), "-c", "copy", "-metadata", "title=Walk", "-metadata:s:v:0", "language=fra",
           "-metadata:s:a:0", "language=eng", str(tagged))  # fmt: skip
    info = media_probe.probe(tagged, "mkv")
    assert "title" in info.tags
    assert "language" in info.video_tags and "language" in info.audio_tags


def test_a_job_probes_its_input_once(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    src = make("wav", work / "input.wav")
    task = Task([src], "wav", "mp3", {}, work)
    before = media_probe._probe.cache_info()
    converter = AudioConverter()
    converter.check(task)
    converter.convert(task)
    after = media_probe._probe.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)


def test_an_unreadable_file_is_reported_without_its_path(tmp_path: Path) -> None:
    work = tmp_path / "some-secret-folder"
    work.mkdir()
    good = make("mp4", tmp_path / "good.mp4")
    data = good.read_bytes()
    (work / "input.mp4").write_bytes(data[: len(data) // 3])
    with pytest.raises(ConversionError, match="could not be read as mp4") as err:
        media_probe.probe(work / "input.mp4", "mp4")
    assert "Invalid data found when processing input" in err.value.message
    assert "some-secret-folder" not in err.value.message + (err.value.hint or "")


def test_without_ffprobe_media_converters_say_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ffmpeg_run, "FFPROBE", None)
    assert "ffprobe" in (ffmpeg_run.ffmpeg_missing.__wrapped__() or "")
    monkeypatch.setattr(media_probe, "FFPROBE", None)
    # (a plain PCM WAV is read from its header without ffprobe: converters.tools.media_wav)
    path = shutil.copy(make("flac", tmp_path / "a.flac"), tmp_path / "b.flac")
    with pytest.raises(ConversionError, match="ffprobe is not installed"):
        media_probe.probe(Path(path), "flac")


# The byte scan reads a file one chunk at a time into one buffer: a marker is found wherever
# it lies, across a chunk boundary too, and what merely looks like the start of one is not.
CHUNK = media_probe._SCAN_CHUNK


@pytest.mark.parametrize(
    ("at", "marker", "what"),
    [
        (0, b"#EXTM3U", "HLS"),
        (3 * CHUNK + 12345, b"#EXT-X-STREAM-INF", "HLS"),
        (CHUNK - 3, b"#EXTM3U", "HLS"),  # "#EX" | "TM3U": split across the first boundary
        (2 * CHUNK - 5, b"#EXT-X-KEY", "HLS"),  # "#EXT-" | "X-KEY": what follows split
        (2 * CHUNK - 8, b"ffconcat version 1.0", "concat script"),
    ],
)
def test_the_scan_finds_a_marker_anywhere(tmp_path: Path, at: int, marker: bytes, what: str) -> None:
    path = tmp_path / "big.wav"
    data = bytearray(b"\x01" * (4 * CHUNK))
    data[at : at + len(marker)] = marker
    path.write_bytes(bytes(data))
    with pytest.raises(ConversionError, match=what):
        media_probe.scan_for_playlists(path)


@pytest.mark.parametrize(
    "content",
    [
        b"#EXTINF is not a playlist's first tag" + b"\x02" * CHUNK,
        b"\x01" * (CHUNK - 4) + b"#EXT",  # the file ends on it: nothing follows
        b"RIFF" + b"\x00" * (2 * CHUNK) + b"#EXTX",
    ],
)
def test_the_scan_passes_what_only_looks_like_a_marker(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ok.wav"
    path.write_bytes(content)
    media_probe.scan_for_playlists(path)


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"\xef\xbb\xbf\r\n  [Playlist]\nFile1=a.mp3", "PLS"),
        (b"\n" * (CHUNK + 10) + b"file 'x.mp4'", None),  # start checks look at the first chunk
        (b" \t<?XML version='1.0'?><MPD/>", "XML"),
        (b"HTTPS://example.com/a.ts\n", "URLs"),
    ],
)
def test_the_scan_looks_at_how_a_file_starts(tmp_path: Path, content: bytes, what: str | None) -> None:
    path = tmp_path / "start.mp4"
    path.write_bytes(content)
    if what is None:
        media_probe.scan_for_playlists(path)
    else:
        with pytest.raises(ConversionError, match=what):
            media_probe.scan_for_playlists(path)

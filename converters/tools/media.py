"""What the audio and video converters share: the media model, limits and trim options.

Hostile media is ordinary input. ffmpeg can be talked into opening other files and URLs by
what it reads (HLS playlists, concat scripts, playlists hidden in AVI subtitle chunks, ...),
so every input goes through three independent gates:

1. `media_probe.scan_for_playlists` refuses files that carry playlist or script text anywhere;
2. `media_probe.probe` opens the file with ffprobe restricted to a short list of single-file
   demuxers and the `file` protocol, and refuses a container other than the declared one,
   missing tracks (`require_tracks`) and bomb-sized frames;
3. `ffmpeg_run.input_stream` runs ffmpeg with the demuxer forced and whitelisted (nested demuxers
   inherit the whitelist), only the `file` protocol, a pixel cap on decoders, no stdin.

This module holds what the three share: the limits, the demuxer whitelist, what a probe
finds (`MediaInfo`) and the part of the input a job converts (`Window`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from converters.base import ConversionError, Option, RequestError
from converters.tools import metadata

# Frames above this are refused before decoding: 8192x4352 covers DCI 8K; a decoder keeps
# a dozen reference frames, so this already means over a gigabyte for one stream.
MAX_PIXELS = 8192 * 4352
MAX_SIDE = 16384
# Longest input (and output) we handle; also caps ffmpeg's output when headers lie.
MAX_DURATION = 12 * 3600.0
MAX_WEBP_FRAMES = 100_000  # frames of an animated WebP given to the video family

# ffprobe and ffmpeg get a bare environment: no proxies, no config paths from the caller.
PROGRAM_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}

# Declared input format -> the one demuxer ffmpeg may use for it. Only demuxers that read a
# single file are listed; hls, concat, dash, image2, tty, lavfi, ... can never be selected.
DEMUXERS: Mapping[str, str] = {
    "mp3": "mp3",
    "wav": "wav",
    "flac": "flac",
    "ogg": "ogg",
    "opus": "ogg",
    "m4a": "mov",
    "aac": "aac",
    "aiff": "aiff",
    "wma": "asf",
    "mp4": "mov",
    "mov": "mov",
    "mkv": "matroska",
    "webm": "matroska",
    "avi": "avi",
    "mpeg": "mpeg",
    "ts": "mpegts",
    "gif": "gif",
    "webp": "webp_anim",  # animated (or still) WebP, as a video
}
SAFE_DEMUXERS = ",".join(sorted(set(DEMUXERS.values())))

AUDIO_INPUTS: tuple[str, ...] = ("mp3", "wav", "flac", "ogg", "opus", "m4a", "aac", "aiff", "wma")
VIDEO_INPUTS: tuple[str, ...] = ("mp4", "mkv", "webm", "mov", "avi", "mpeg", "ts", "gif", "webp")
SILENT_INPUTS = frozenset({"gif", "webp"})  # animated images: never a sound track


@dataclasses.dataclass(frozen=True)
class VideoTrack:
    codec: str
    width: int
    height: int
    fps: float


@dataclasses.dataclass(frozen=True)
class AudioTrack:
    codec: str
    sample_rate: int
    channels: int


@dataclasses.dataclass(frozen=True)
class MediaInfo:
    demuxer: str  # short demuxer name ffmpeg is forced to use ("mov", "matroska", ...)
    duration: float | None  # seconds, when the container says
    video: VideoTrack | None
    audio: AudioTrack | None
    # tag names (not values) of the container and of the first video and audio streams,
    # for the metadata policy (converters.tools.metadata)
    tags: tuple[str, ...] = ()
    video_tags: tuple[str, ...] = ()
    audio_tags: tuple[str, ...] = ()

    def metadata_args(self, how: str, *, video: bool, audio: bool) -> list[str]:
        """ffmpeg output arguments applying the metadata policy `how` to this input."""
        streams = {}
        if video:
            streams["s:v:0"] = self.video_tags
        if audio:
            streams["s:a:0"] = self.audio_tags
        return metadata.media_output_args(how, self.tags, streams)


def require_tracks(info: MediaInfo, *, audio: bool = False, video: bool = False) -> None:
    if audio and info.audio is None:
        raise ConversionError(
            "The file has no audio track.",
            hint="Only files with sound can become audio; pick a file with an audio track.",
        )
    if video and info.video is None:
        raise ConversionError(
            "The file has no video track.",
            hint="Only files with moving pictures can become video or GIF.",
        )
    if info.duration is not None and info.duration > MAX_DURATION:
        raise ConversionError(
            f"The file lasts {info.duration / 3600:.1f} hours, over the "
            f"{MAX_DURATION / 3600:.0f} hour limit.",
            hint="Cut it into shorter parts first.",
        )


# ---------------------------------------------------------------------------- shared options


def trim_options() -> dict[str, Option]:
    return {
        "start": Option(
            "number",
            "Start of the part to keep, in seconds from the beginning.",
            minimum=0,
            maximum=MAX_DURATION,
        ),
        "end": Option(
            "number",
            "End of the part to keep, in seconds from the beginning (default: the end of the file).",
            minimum=0,
            maximum=MAX_DURATION,
        ),
    }


@dataclasses.dataclass(frozen=True)
class Window:
    """The part of the input to convert."""

    start: float
    length: float | None  # seconds to keep; None = to the end
    expected: float | None  # output duration we expect, for progress


def check_trim(options: Mapping[str, Any]) -> None:
    """An end at or before the start, refused while the request is answered (the
    converters' check_options): no file is needed to know it."""
    start, end = options.get("start") or 0.0, options.get("end")
    if end is not None and float(end) <= float(start):
        raise RequestError(
            f"The end ({float(end):g} s) must come after the start ({float(start):g} s).",
            "Set end to a time later than start, or leave it out.",
            field="end",
        )


def trim_window(info: MediaInfo, options: Mapping[str, Any]) -> Window:
    start = float(options.get("start") or 0.0)
    end = options.get("end")
    end = None if end is None else float(end)
    if info.duration is not None and start >= info.duration:
        raise ConversionError(
            f"The start ({start:g} s) is at or past the end of the file ({info.duration:.2f} s).",
            hint=f"Pick a start below {info.duration:.2f} seconds.",
        )
    stop = end if info.duration is None else min(end or info.duration, info.duration)
    length = None if end is None else end - start
    expected = None if stop is None else max(stop - start, 0.0)
    return Window(start, length, expected)

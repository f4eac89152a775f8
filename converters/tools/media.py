"""Shared ffmpeg and PyAV plumbing for the audio and video converters.

Hostile media is ordinary input. ffmpeg can be talked into opening other files and URLs by
what it reads (HLS playlists, concat scripts, playlists hidden in AVI subtitle chunks, ...),
so every input goes through three independent gates:

1. `scan_for_playlists` refuses files that carry playlist or script text anywhere;
2. `probe` opens the file with PyAV restricted to a short list of single-file demuxers, and
   refuses a container other than the declared one, missing tracks and bomb-sized frames;
3. `ffmpeg_run.input_stream` runs ffmpeg with the demuxer forced and whitelisted (nested demuxers
   inherit the whitelist), only the `file` protocol, a pixel cap on decoders, no stdin.

The ffmpeg binary is the one imageio-ffmpeg ships; it has no ffprobe, hence PyAV for probing.
Running it (the binary, its arguments, progress and stall watch, errors) is
`converters.tools.ffmpeg_run`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import av

from converters.base import ConversionError, Option
from converters.tools import metadata

# Frames above this are refused before decoding: 8192x4352 covers DCI 8K; a decoder keeps
# a dozen reference frames, so this already means over a gigabyte for one stream.
MAX_PIXELS = 8192 * 4352
MAX_SIDE = 16384
# Longest input (and output) we handle; also caps ffmpeg's output when headers lie.
MAX_DURATION = 12 * 3600.0
MAX_WEBP_FRAMES = 100_000  # frames of an animated WebP given to the video family

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
# Uncompressed and lossless audio containers describe their one stream completely in the
# header: probing them need not read ffmpeg's default 5 MB (a 30 s WAV read whole: 40+ ms).
_HEADER_DESCRIBED = frozenset({"wav", "aiff", "flac"})
_SHORT_PROBE = {"probesize": str(256 * 1024)}

# How a detected demuxer is named back to the user ("it looks like ...").
_FRIENDLY = {
    "mov": "mp4/mov/m4a",
    "matroska": "mkv/webm",
    "ogg": "ogg/opus",
    "asf": "wma/wmv",
    "mpegts": "ts",
    "webp_anim": "webp",
}

AUDIO_INPUTS: tuple[str, ...] = ("mp3", "wav", "flac", "ogg", "opus", "m4a", "aac", "aiff", "wma")
VIDEO_INPUTS: tuple[str, ...] = ("mp4", "mkv", "webm", "mov", "avi", "mpeg", "ts", "gif", "webp")
SILENT_INPUTS = frozenset({"gif", "webp"})  # animated images: never a sound track

# Text that turns a media file into a list of other files or URLs for ffmpeg.
_PLAYLIST_MARKERS: tuple[tuple[bytes, str], ...] = (
    (b"#EXTM3U", "an HLS (m3u8) playlist"),
    (b"#EXT-X-", "an HLS (m3u8) playlist"),
    (b"ffconcat version", "an ffmpeg concat script"),
)
_SCRIPT_STARTS: tuple[tuple[bytes, str], ...] = (
    (b"[playlist]", "a PLS playlist"),
    (b"<?xml", "an XML document (DASH manifest, SMIL or similar)"),
    (b"<mpd", "a DASH manifest"),
    (b"<smil", "a SMIL playlist"),
    (b"file ", "an ffmpeg concat script"),
    (b"http://", "a list of URLs"),
    (b"https://", "a list of URLs"),
    (b"file:", "a list of file URLs"),
)
_SCAN_CHUNK = 1 << 20


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


# ---------------------------------------------------------------------------- probing


def _describe_content(path: Path) -> str:
    try:
        import magic  # optional: only makes the hint more precise

        return str(magic.from_file(str(path))).split(",")[0]
    except Exception:  # libmagic missing or confused: no description
        return ""


def scan_for_playlists(path: Path) -> None:
    """Refuse files that are, or hide, playlists or scripts naming other files or URLs.

    The whole file is scanned: the AVI trick hides an m3u8 playlist in a GAB2 subtitle
    chunk anywhere in the file, and ffmpeg would probe that chunk as a nested input.
    """
    with path.open("rb") as fh:
        head = fh.read(_SCAN_CHUNK)
        start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
        for marker, what in _SCRIPT_STARTS:
            if start.startswith(marker):
                raise _playlist_error(what)
        tail = b""
        chunk = head
        while chunk:
            window = tail + chunk
            for marker, what in _PLAYLIST_MARKERS:
                if marker in window:
                    raise _playlist_error(what)
            tail = window[-32:]
            chunk = fh.read(_SCAN_CHUNK)


def _playlist_error(what: str) -> ConversionError:
    return ConversionError(
        f"The file is or contains {what}, which could make the converter read other files "
        "or URLs; it is refused.",
        hint="Upload the media file itself, not a playlist or a file that embeds one.",
    )


def probe(path: Path, declared: str) -> MediaInfo:
    """Open `path` with PyAV as `declared` safely and describe it, or raise ConversionError."""
    st = path.stat()
    return _probe(str(path), st.st_size, st.st_mtime_ns, declared)


@functools.lru_cache(maxsize=16)
def _probe(path_str: str, size: int, mtime_ns: int, declared: str) -> MediaInfo:
    path = Path(path_str)
    if size == 0:
        raise ConversionError("The file is empty.", hint="Upload the file again.")
    if declared not in DEMUXERS:
        raise ConversionError(f"'{declared}' is not a media format this converter reads.")
    scan_for_playlists(path)
    expected = DEMUXERS[declared]
    if declared == "webp":
        return _probe_webp(path)  # PyAV's own libavformat has no animated WebP demuxer
    try:
        container = av.open(
            path_str,
            container_options={
                "format_whitelist": SAFE_DEMUXERS,
                "protocol_whitelist": "file",
                **(_SHORT_PROBE if expected in _HEADER_DESCRIBED else {}),
            },
            # decoders run during stream probing: cap their frame size too
            options={"max_pixels": str(MAX_PIXELS)},
        )
    except av.FFmpegError as exc:
        seen = _describe_content(path)
        raise ConversionError(
            f"The file could not be read as {declared}: it is damaged, truncated or not an "
            f"audio/video file ({_av_reason(exc)}).",
            hint=(f"It looks like: {seen}. " if seen else "") + f"Upload a complete {declared} file.",
        ) from None
    with container:
        names = container.format.name.split(",")
        if expected not in names:
            detected = _FRIENDLY.get(names[0], names[0])
            raise ConversionError(
                f"The file is not {declared}: its content is {detected}.",
                hint=f"Send it with input format {detected.split('/')[0]}, or upload a real {declared} file.",
            )
        return MediaInfo(
            demuxer=expected,
            duration=_duration(container),
            video=_video_track(container),
            audio=_audio_track(container),
            tags=tuple(container.metadata),
            video_tags=_stream_tags(container.streams.video),
            audio_tags=_stream_tags(container.streams.audio),
        )


def _probe_webp(path: Path) -> MediaInfo:
    """An animated (or still) WebP described from its RIFF chunks, no pixel decoded:
    canvas size, frame count and durations. Pillow confirms it opens as WebP."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit follows
            with Image.open(path, formats=("WEBP",)) as im:
                width, height = im.size
    except Image.DecompressionBombError:
        raise ConversionError(
            f"The animation declares over the {MAX_PIXELS / 1e6:.0f} million pixel limit per frame.",
            hint="Scale it down before converting it.",
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, EOFError, SyntaxError) as exc:
        raise ConversionError(
            f"The file could not be read as webp: it is damaged, truncated or not a WebP image ({exc}).",
            hint="Upload a complete webp file.",
        ) from None
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise ConversionError(
            f"The animation declares {width}x{height} pixels, over the "
            f"{MAX_PIXELS / 1e6:.0f} million pixel limit.",
            hint="Scale it down before converting it.",
        )
    frames, total_ms = _webp_frames(path)
    if frames > MAX_WEBP_FRAMES:
        raise ConversionError(
            f"The animation has {frames} frames, over the {MAX_WEBP_FRAMES} frame limit.",
            hint="Cut it into shorter parts first.",
        )
    seconds = total_ms / 1000 if total_ms > 0 else None
    fps = frames / seconds if seconds else 10.0
    return MediaInfo("webp_anim", seconds, VideoTrack("webp", width, height, fps), None)


def _webp_frames(path: Path) -> tuple[int, int]:
    """(frames, total duration in ms) from the ANMF chunk headers; a still WebP is 1, 0."""
    frames = total = 0
    with path.open("rb") as fh:
        fh.seek(12)  # "RIFF" size "WEBP"
        while frames <= MAX_WEBP_FRAMES:
            head = fh.read(8)
            if len(head) < 8:
                break
            kind, size = head[:4], int.from_bytes(head[4:], "little")
            if kind == b"ANMF":
                header = fh.read(16)
                if len(header) < 16:
                    break
                frames += 1
                total += int.from_bytes(header[12:15], "little")  # duration, 24 bits, ms
                fh.seek(size + (size & 1) - 16, os.SEEK_CUR)
            else:
                fh.seek(size + (size & 1), os.SEEK_CUR)
    return max(frames, 1), total


def _stream_tags(streams: Any) -> tuple[str, ...]:
    for stream in streams:
        return tuple(stream.metadata)
    return ()


def _av_reason(exc: av.FFmpegError) -> str:
    return str(getattr(exc, "strerror", None) or exc).rstrip(".")


def _duration(container: Any) -> float | None:
    if container.duration and container.duration > 0:
        return float(container.duration / av.time_base)
    best = 0.0
    for stream in container.streams:
        if stream.duration and stream.time_base:
            best = max(best, float(stream.duration * stream.time_base))
    return best or None


def _video_track(container: Any) -> VideoTrack | None:
    for stream in container.streams.video:
        if stream.disposition & av.stream.Disposition.attached_pic:
            continue  # cover art in a music file is not a video track
        ctx = stream.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if width <= 0 or height <= 0:
            # the decoder refuses to open on frames over max_pixels, which leaves 0x0 here
            raise ConversionError(
                "The video track declares no usable frame size: the file is damaged, or its "
                f"frames are over the {MAX_PIXELS / 1e6:.0f} million pixel limit.",
                hint="Scale the video down to 8K or less, or check that the file plays.",
            )
        if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
            raise ConversionError(
                f"The video declares {width}x{height} pixels, over the "
                f"{MAX_PIXELS / 1e6:.0f} million pixel limit.",
                hint="Scale the video down to 8K or less before converting it.",
            )
        rate = stream.average_rate or stream.guessed_rate or 0
        return VideoTrack(ctx.name, width, height, float(rate))
    return None


def _audio_track(container: Any) -> AudioTrack | None:
    for stream in container.streams.audio:
        ctx = stream.codec_context
        channels = getattr(ctx, "channels", None) or ctx.layout.nb_channels
        return AudioTrack(ctx.name, int(ctx.sample_rate or 0), int(channels or 0))
    return None


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


def trim_window(info: MediaInfo, options: Mapping[str, Any]) -> Window:
    start = float(options.get("start") or 0.0)
    end = options.get("end")
    end = None if end is None else float(end)
    if end is not None and end <= start:
        raise ConversionError(
            f"The end ({end:g} s) must come after the start ({start:g} s).",
            hint="Set end to a time later than start, or leave it out.",
        )
    if info.duration is not None and start >= info.duration:
        raise ConversionError(
            f"The start ({start:g} s) is at or past the end of the file ({info.duration:.2f} s).",
            hint=f"Pick a start below {info.duration:.2f} seconds.",
        )
    stop = end if info.duration is None else min(end or info.duration, info.duration)
    length = None if end is None else end - start
    expected = None if stop is None else max(stop - start, 0.0)
    return Window(start, length, expected)

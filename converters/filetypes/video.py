"""Video conversion with ffmpeg: containers and codecs, animated GIF, and sound extraction.

`filetype=video` with an audio output format (mp4 -> mp3) extracts the sound track through
the same code as the audio converter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import ffmpeg

from converters.base import Converter, Limits, Option, Result, Task
from converters.filetypes import audio
from converters.tools import ffmpeg_run, media, metadata

_PRESETS = ("fast", "medium", "slow")


@dataclasses.dataclass(frozen=True)
class VideoCodec:
    encoders: tuple[str, ...]  # first one this ffmpeg has wins
    crf_default: int
    crf_max: int

    def encoder(self) -> str | None:
        have = ffmpeg_run.encoders()
        return next((e for e in self.encoders if e in have), None)


VIDEO_CODECS: Mapping[str, VideoCodec] = {
    "h264": VideoCodec(("libx264",), 23, 51),
    "h265": VideoCodec(("libx265",), 28, 51),
    "vp9": VideoCodec(("libvpx-vp9",), 33, 63),
    "av1": VideoCodec(("libsvtav1", "libaom-av1"), 35, 63),
    "mpeg4": VideoCodec(("mpeg4",), 5, 31),  # qscale, not crf: see _codec_args
}


@dataclasses.dataclass(frozen=True)
class Container:
    muxer: str
    codecs: tuple[str, ...]  # first is the default
    audio_encoder: str
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


CONTAINERS: Mapping[str, Container] = {
    "mp4": Container("mp4", ("h264", "h265", "vp9", "av1"), "aac", {"movflags": "+faststart"}),
    "mkv": Container("matroska", ("h264", "h265", "vp9", "av1"), "aac"),
    "webm": Container("webm", ("vp9", "av1"), "libopus"),
    "mov": Container("mov", ("h264", "h265"), "aac", {"movflags": "+faststart"}),
    "avi": Container("avi", ("mpeg4", "h264"), "libmp3lame"),
}

GIF_WIDTH = 480  # default GIF width; sources narrower than this keep their width


def _codecs(output_format: str) -> tuple[str, ...]:
    return tuple(c for c in CONTAINERS[output_format].codecs if VIDEO_CODECS[c].encoder())


def video_outputs() -> frozenset[str]:
    outs = {
        f
        for f, c in CONTAINERS.items()
        if not ffmpeg_run.cannot_write(c.audio_encoder, c.muxer) and _codecs(f)
    }
    if not ffmpeg_run.cannot_write("gif", "gif"):
        outs.add("gif")
    return frozenset(outs)


def missing_video_outputs() -> dict[str, str]:
    """Video formats (and codecs) this ffmpeg cannot write, with the reason."""
    out: dict[str, str] = {}
    for fmt, container in CONTAINERS.items():
        if reason := ffmpeg_run.cannot_write(container.audio_encoder, container.muxer):
            out[fmt] = reason
        for codec in container.codecs:
            if VIDEO_CODECS[codec].encoder() is None:
                out[f"{fmt}+{codec}"] = "this ffmpeg has none of the encoders " + ", ".join(
                    VIDEO_CODECS[codec].encoders
                )
    if ffmpeg_run.cannot_write("gif", "gif"):
        out["gif"] = "this ffmpeg cannot write GIF"
    return out


def video_options(output_format: str) -> dict[str, Option]:
    codecs = _codecs(output_format)
    return {
        "codec": Option("string", "Video codec.", default=codecs[0], enum=codecs),
        "crf": Option(
            "integer",
            "Constant quality: lower is better and bigger. Default per codec (h264 23, "
            "h265 28, vp9 33, av1 35); h264/h265 stop at 51; for mpeg4 it is the 1-31 "
            "quantiser.",
            minimum=0,
            maximum=63,
        ),
        "preset": Option(
            "string", "Encoding speed: fast gives bigger files sooner.", default="medium", enum=_PRESETS
        ),
        **_size_options(),
        "fps": Option("number", "Frames per second (default: keep the source's).", minimum=1, maximum=120),
        **media.trim_options(),
        "audio": Option("boolean", "Keep the sound track (false removes it).", default=True),
        "metadata": metadata.option("video (container and stream tags)"),
    }


def _size_options() -> dict[str, Option]:
    return {
        "width": Option(
            "integer",
            "Width in pixels. With height too, the video is fitted "
            "inside width x height keeping its aspect; alone, height follows.",
            minimum=16,
            maximum=media.MAX_SIDE // 2,
        ),
        "height": Option(
            "integer",
            "Height in pixels. With width too, the video is fitted "
            "inside width x height keeping its aspect; alone, width follows.",
            minimum=16,
            maximum=media.MAX_SIDE // 2,
        ),
    }


def gif_options() -> dict[str, Option]:
    return {
        "fps": Option("number", "Frames per second of the GIF.", default=10, minimum=1, maximum=50),
        "width": Option(
            "integer",
            f"Width in pixels; height follows (default: the source's, at most {GIF_WIDTH}).",
            minimum=16,
            maximum=1920,
        ),
        **media.trim_options(),
    }


def _scale(stream: Any, width: int | None, height: int | None, source: media.VideoTrack | None) -> Any:
    # Encoders for 4:2:0 need even sizes; force_divisible_by/-2 keep them even.
    if width and height:
        return stream.filter(
            "scale", width, height, force_original_aspect_ratio="decrease", force_divisible_by=2
        )
    if width:
        return stream.filter("scale", width, -2)
    if height:
        return stream.filter("scale", -2, height)
    if source is not None and all(side > 0 and side % 2 == 0 for side in (source.width, source.height)):
        # already even: a scale to the same size still costs a pass over every frame
        # (a 720p VP9 encode took ~10% longer with it)
        return stream
    return stream.filter("scale", "trunc(iw/2)*2", "trunc(ih/2)*2")


def _codec_args(name: str, crf: int | None, preset: str, muxer: str) -> dict[str, Any]:
    codec = VIDEO_CODECS[name]
    encoder = codec.encoder()
    quality = min(codec.crf_default if crf is None else crf, codec.crf_max)
    args: dict[str, Any] = {"c:v": encoder, "pix_fmt": "yuv420p"}
    speed = _PRESETS.index(preset)  # 0 fast, 1 medium, 2 slow
    if encoder in ("libx264", "libx265"):
        args.update(crf=quality, preset=("veryfast", "medium", "slow")[speed])
        if encoder == "libx265":
            args["x265-params"] = "log-level=error"
            if muxer in ("mp4", "mov"):
                args["tag:v"] = "hvc1"  # what Apple players look for
    elif encoder == "libvpx-vp9":
        args.update(crf=quality, **{"b:v": 0, "row-mt": 1})
        args.update({"deadline": ("realtime", "good", "good")[speed], "cpu-used": (8, 4, 2)[speed]})
    elif encoder == "libsvtav1":
        args.update(crf=quality, preset=(10, 8, 5)[speed])
    elif encoder == "libaom-av1":
        args.update(crf=quality, **{"b:v": 0, "cpu-used": (8, 6, 4)[speed], "row-mt": 1})
    elif encoder == "mpeg4":
        args["q:v"] = max(quality, 1)
    return args


def check_video(task: Task, *, needs_audio: bool = False) -> media.MediaInfo:
    return audio.probe_input(task, video=not needs_audio, audio=needs_audio)


def encode_video(task: Task, limits: Limits) -> Result:
    info = check_video(task)
    opts = task.options
    window = media.trim_window(info, opts)
    container = CONTAINERS[task.output_format]
    source = ffmpeg_run.input_stream(task.inputs[0], info, window)

    video = source["V:0"]
    if task.input_format in media.SILENT_INPUTS:
        # an animated image's transparent parts over white (a video has no alpha and would
        # show black): c*a + white*(1-a), with two negations around a premultiplication
        video = (
            video.filter("format", "rgba").filter("negate").filter("premultiply", inplace=1).filter("negate")
        )
    if opts.get("fps"):
        video = video.filter("fps", fps=opts["fps"])
    video = _scale(video, opts.get("width"), opts.get("height"), info.video)
    streams = [video]
    kwargs: dict[str, Any] = {
        **ffmpeg_run.output_args(info, window, limits),
        "f": container.muxer,
        **container.extra,
        **_codec_args(
            opts.get("codec") or _codecs(task.output_format)[0],
            opts.get("crf"),
            opts.get("preset", "medium"),
            container.muxer,
        ),
    }
    if task.input_format in media.SILENT_INPUTS and kwargs["c:v"] in ("libx264", "libx265"):
        # no B-frames: with them the mp4 muxer gives the last frame of a variable-rate
        # animation a wrong duration (a 1.5 s GIF played for 1.0 s)
        kwargs["bf"] = 0
    if opts.get("audio", True) and info.audio is not None:
        streams.append(source["a:0"])
        kwargs["c:a"] = container.audio_encoder
        if container.audio_encoder == "libopus" and info.audio.channels > 2:
            kwargs["ac"] = 2  # libopus needs a mapping family for surround
    else:
        kwargs["an"] = None

    out = ffmpeg_run.output_path(task.workdir, task.output_format)
    how = metadata.mode(opts)
    ffmpeg_run.run(
        ffmpeg.output(*streams, f"file:{out}", **kwargs),
        out,
        window=window,
        progress=task.progress,
        limits=limits,
        video=True,
        extra=info.metadata_args(how, video=True, audio="an" not in kwargs),
    )
    return Result(out)


def encode_gif(task: Task, limits: Limits) -> Result:
    info = check_video(task)
    opts = task.options
    window = media.trim_window(info, opts)
    source = ffmpeg_run.input_stream(task.inputs[0], info, window)

    width = opts.get("width") or f"min(iw,{GIF_WIDTH})"
    frames = (
        source["V:0"]
        .filter("fps", fps=opts.get("fps") or 10)
        .filter("scale", width, -2, flags="lanczos")
        .split()
    )
    # One palette per frame streams through; a global palette would hold every frame.
    palette = frames[0].filter("palettegen", stats_mode="single")
    video = ffmpeg.filter([frames[1], palette], "paletteuse", new=1)

    out = ffmpeg_run.output_path(task.workdir, "gif")
    kwargs = {**ffmpeg_run.output_args(info, window, limits), "f": "gif", "an": None}
    ffmpeg_run.run(
        ffmpeg.output(video, f"file:{out}", **kwargs),
        out,
        window=window,
        progress=task.progress,
        limits=limits,
        video=True,
    )
    return Result(out)


class VideoConverter(Converter):
    filetype: ClassVar[str] = "video"
    engine: ClassVar[str] = "ffmpeg"
    # AV1 (SVT-AV1) reserves over 2 GiB of address space for 4K frames even on 2 cores, and
    # RLIMIT_AS counts reservations: 4 GiB lets every listed codec run at 4K.
    limits: ClassVar[Limits] = Limits(memory_bytes=4 * 1024**3, cpu_seconds=4 * 3600, wall_seconds=3600)

    def unavailable(self) -> str | None:
        return ffmpeg_run.ffmpeg_missing()

    def unavailable_formats(self) -> Mapping[str, str]:
        return {**missing_video_outputs(), **audio.missing_audio_outputs()}

    def pairs(self) -> Mapping[str, frozenset[str]]:
        videos = video_outputs()
        sounds = audio.audio_outputs()
        return {
            fmt: videos | (frozenset() if fmt in media.SILENT_INPUTS else sounds)
            for fmt in media.VIDEO_INPUTS
        }

    def options(self, input_format: str, output_format: str) -> Mapping[str, Option]:
        if output_format == "gif":
            return gif_options()
        if output_format in CONTAINERS:
            return video_options(output_format)
        return audio.audio_options(output_format)

    def check_options(self, input_format: str, output_format: str, options: Mapping[str, Any]) -> None:
        media.check_trim(options)

    def check(self, task: Task) -> None:
        check_video(task, needs_audio=task.output_format in audio.AUDIO_CODECS)

    def convert(self, task: Task) -> Result:
        if task.output_format == "gif":
            return encode_gif(task, self.limits)
        if task.output_format in CONTAINERS:
            return encode_video(task, self.limits)
        return audio.encode_audio(task, self.limits)

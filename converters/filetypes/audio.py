"""Audio conversion with ffmpeg: audio files, and the sound track of video files.

The encoding half (`audio_outputs`, `audio_options`, `encode_audio`) is shared with the
video converter, which offers the same extraction under filetype "video".
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any, ClassVar

import ffmpeg

from converters.base import Converter, Limits, Option, Result, Task
from converters.tools import ffmpeg_run, media, media_probe, metadata

_PCM_RATES = (8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000, 176400, 192000)
_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


@dataclasses.dataclass(frozen=True)
class AudioCodec:
    muxer: str
    encoder: str
    bitrate: tuple[int, int, int] | None  # (default, min, max) kbps; None for lossless
    sample_rates: tuple[int, ...]
    channels: tuple[int, ...]  # layouts the encoder and muxer really take
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def max_channels(self) -> int:
        return max(self.channels)


# Output format -> how ffmpeg writes it.
AUDIO_CODECS: Mapping[str, AudioCodec] = {
    "mp3": AudioCodec("mp3", "libmp3lame", (192, 32, 320), _MP3_RATES, (1, 2)),
    "wav": AudioCodec("wav", "pcm_s16le", None, _PCM_RATES, (1, 2, 6, 8)),
    "flac": AudioCodec("flac", "flac", None, _PCM_RATES, (1, 2, 6, 8)),
    "ogg": AudioCodec("ogg", "libvorbis", (160, 64, 500), _PCM_RATES, (1, 2, 6, 8)),
    "opus": AudioCodec("opus", "libopus", (128, 16, 256), _OPUS_RATES, (1, 2)),
    "m4a": AudioCodec("ipod", "aac", (160, 32, 320), _AAC_RATES, (1, 2, 6, 8), {"movflags": "+faststart"}),
    # ADTS headers stop at 5.1
    "aac": AudioCodec("adts", "aac", (160, 32, 320), _AAC_RATES, (1, 2, 6)),
}

# libvorbis refuses most bitrates away from 44.1/48 kHz stereo; its quality scale works at
# every rate, so a bitrate is turned into the quality that lands near it (stereo, 44.1 kHz).
_VORBIS_QUALITY = (
    (64, 0),
    (80, 1),
    (96, 2),
    (112, 3),
    (128, 4),
    (160, 5),
    (192, 6),
    (224, 7),
    (256, 8),
    (320, 9),
    (500, 10),
)

# What loudness normalisation aims at: EBU R128 streaming level.
_LOUDNORM = {"i": -16, "tp": -1.5, "lra": 11}


def audio_outputs() -> frozenset[str]:
    """The audio formats this machine's ffmpeg can really write."""
    return frozenset(f for f, c in AUDIO_CODECS.items() if not ffmpeg_run.cannot_write(c.encoder, c.muxer))


def missing_audio_outputs() -> dict[str, str]:
    """Audio formats this ffmpeg cannot write, with the reason (for `convertd doctor`)."""
    out: dict[str, str] = {}
    for fmt, codec in AUDIO_CODECS.items():
        if reason := ffmpeg_run.cannot_write(codec.encoder, codec.muxer):
            out[fmt] = reason
    return out


def audio_options(output_format: str) -> dict[str, Option]:
    codec = AUDIO_CODECS[output_format]
    opts: dict[str, Option] = {}
    if codec.bitrate:
        default, low, high = codec.bitrate
        opts["bitrate"] = Option(
            "integer", "Audio bitrate in kbit/s.", default=default, minimum=low, maximum=high
        )
    opts["sample_rate"] = Option(
        "integer",
        "Sample rate in Hz (default: keep the source's when the format allows it).",
        enum=codec.sample_rates,
    )
    opts["channels"] = Option(
        "integer",
        "Number of channels: 1 mono, 2 stereo, 6 for 5.1, 8 for 7.1 (default: keep the source's).",
        enum=codec.channels,
    )
    opts.update(media.trim_options())
    opts["normalize"] = Option("boolean", "Normalise loudness to -16 LUFS (EBU R128).", default=False)
    opts["metadata"] = metadata.option("recording (tags such as title and artist)")
    return opts


def probe_input(task: Task, *, audio: bool = False, video: bool = False) -> media.MediaInfo:
    """The input's tracks; refused before any work when a needed track or the trim window is wrong."""
    info = media_probe.probe(task.inputs[0], task.input_format)
    media.require_tracks(info, audio=audio, video=video)
    media.trim_window(info, task.options)
    return info


def check_audio(task: Task) -> media.MediaInfo:
    return probe_input(task, audio=True)


def encode_audio(task: Task, limits: Limits) -> Result:
    """Write the first audio track of task.inputs[0] as task.output_format."""
    info = check_audio(task)
    assert info.audio is not None
    codec = AUDIO_CODECS[task.output_format]
    opts = task.options
    window = media.trim_window(info, opts)

    stream = ffmpeg_run.input_stream(task.inputs[0], info, window)["a:0"]
    if opts.get("normalize"):
        stream = stream.filter("loudnorm", **_LOUDNORM)

    kwargs: dict[str, Any] = {
        **ffmpeg_run.output_args(info, window, limits),
        "vn": None,
        "c:a": codec.encoder,
        "f": codec.muxer,
        **codec.extra,
    }
    if codec.bitrate:
        kbps = opts.get("bitrate") or codec.bitrate[0]
        if codec.encoder == "libvorbis":
            kwargs["q:a"] = _vorbis_quality(kbps)
        else:
            kwargs["b:a"] = f"{kbps}k"
    rate = opts.get("sample_rate")
    if rate is None and (opts.get("normalize") or info.audio.sample_rate not in codec.sample_rates):
        # loudnorm works at 192 kHz; otherwise the source rate is one the codec lacks
        rate = _nearest_rate(info.audio.sample_rate or 48000, codec.sample_rates)
    if rate:
        kwargs["ar"] = rate
    channels = opts.get("channels") or (
        codec.max_channels if info.audio.channels > codec.max_channels else None
    )
    if channels:
        kwargs["ac"] = channels

    out = ffmpeg_run.output_path(task.workdir, task.output_format)
    ffmpeg_run.run(
        ffmpeg.output(stream, f"file:{out}", **kwargs),
        out,
        window=window,
        progress=task.progress,
        limits=limits,
        extra=info.metadata_args(metadata.mode(opts), video=False, audio=True),
    )
    return Result(out)


def _vorbis_quality(kbps: int) -> float:
    points = _VORBIS_QUALITY
    for (b0, q0), (b1, q1) in itertools.pairwise(points):
        if kbps <= b1:
            return round(q0 + (q1 - q0) * max(kbps - b0, 0) / (b1 - b0), 1)
    return float(points[-1][1])


def _nearest_rate(rate: int, allowed: tuple[int, ...]) -> int:
    higher = [r for r in allowed if r >= rate]
    return min(higher) if higher else max(allowed)


class AudioConverter(Converter):
    filetype: ClassVar[str] = "audio"
    engine: ClassVar[str] = "ffmpeg"
    # Long recordings take a while; encoding audio needs little memory.
    limits: ClassVar[Limits] = Limits(cpu_seconds=3600, wall_seconds=3600)

    def unavailable(self) -> str | None:
        return ffmpeg_run.ffmpeg_missing()

    def unavailable_formats(self) -> Mapping[str, str]:
        return missing_audio_outputs()

    def pairs(self) -> Mapping[str, frozenset[str]]:
        outputs = audio_outputs()
        if not outputs:
            return {}
        inputs = media.AUDIO_INPUTS + tuple(f for f in media.VIDEO_INPUTS if f not in media.SILENT_INPUTS)
        return {fmt: outputs for fmt in inputs}

    def options(self, input_format: str, output_format: str) -> Mapping[str, Option]:
        return audio_options(output_format)

    def check_options(self, input_format: str, output_format: str, options: Mapping[str, Any]) -> None:
        media.check_trim(options)

    def check(self, task: Task) -> None:
        check_audio(task)

    def convert(self, task: Task) -> Result:
        return encode_audio(task, self.limits)

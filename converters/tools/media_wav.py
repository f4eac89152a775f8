"""A plain PCM WAV described from its header, without starting ffprobe.

WAV is the input of most audio jobs, and its header says everything a job needs (sample
format, rate, channels, the data's length). Starting ffprobe for it costs 10-20 ms of a
30 s WAV -> MP3 job whose whole overhead budget is ~40 ms. So `describe` reads the RIFF
chunks itself, but only of files it understands completely: "RIFF"/"WAVE", a plain PCM
or float `fmt ` chunk, optional `LIST`/`INFO` tags, `fact`/`PAD `/`JUNK` padding, then
`data`, wholly inside the file. Anything else (RF64, WAVE_FORMAT_EXTENSIBLE, bext, id3,
cue chunks, a compressed codec, a truncated or lying header, data that looks like a
DTS/AC-3 stream carried as PCM, a tag name the metadata policy treats as a place) returns
None, and ffprobe describes the file as before. The other gates are unchanged: the whole
file is scanned first, and ffmpeg reads it with the wav demuxer forced and whitelisted.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from converters.tools import metadata
from converters.tools.media import AudioTrack, MediaInfo

_HEAD = 80 * 1024  # the chunks before `data`, and the start of the samples, must fit in this
# ffmpeg's wav demuxer looks for a DTS or AC-3 stream in the first 64 KiB of the samples
_BITSTREAM_PROBE = 64 * 1024
_PCM, _FLOAT = 1, 3
_CODECS = {
    (_PCM, 8): "pcm_u8",
    (_PCM, 16): "pcm_s16le",
    (_PCM, 24): "pcm_s24le",
    (_PCM, 32): "pcm_s32le",
    (_FLOAT, 32): "pcm_f32le",
    (_FLOAT, 64): "pcm_f64le",
}
_PADDING = frozenset({b"fact", b"PAD ", b"JUNK"})
# ffmpeg's names for the RIFF INFO tags (libavformat/riff.c, ff_riff_info_conv); others
# keep their four-character id
_INFO_NAMES = {
    b"IART": "artist", b"ICMT": "comment", b"ICOP": "copyright", b"ICRD": "date",
    b"IGNR": "genre", b"ILNG": "language", b"INAM": "title", b"IPRD": "album",
    b"IPRT": "track", b"ITRK": "track", b"ISFT": "encoder", b"ISMP": "timecode",
    b"ITCH": "encoded_by",
}  # fmt: skip
# Sync words of a DTS or AC-3 stream hidden in 16-bit PCM (IEC 61937, and DTS's 14- and
# 16-bit forms in both byte orders): ffmpeg would decode it as that codec, not as PCM.
_BITSTREAM_SYNCS = (
    b"\x72\xf8\x1f\x4e",
    b"\xfe\x7f\x01\x80",
    b"\x7f\xfe\x80\x01",
    b"\x1f\xff\xe8\x00",
    b"\xff\x1f\x00\xe8",
)


def describe(path: Path) -> MediaInfo | None:
    """The WAV's MediaInfo when it is a plain PCM WAV this module reads whole; else None."""
    with path.open("rb") as fh:
        head = fh.read(_HEAD)
        size = os.fstat(fh.fileno()).st_size
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    fmt: tuple[int, int, int, int] | None = None  # (tag, channels, rate, bits)
    tags: list[str] = []
    at = 12
    while at + 8 <= len(head):
        kind, length = head[at : at + 4], struct.unpack_from("<I", head, at + 4)[0]
        body = at + 8
        if kind == b"data":
            return _info(fmt, tags, head, body, length, size)
        if body + length > len(head):
            return None
        if kind == b"fmt " and fmt is None:
            fmt = _fmt(head[body : body + length])
            if fmt is None:
                return None
        elif kind == b"LIST" and head[body : body + 4] == b"INFO":
            names = _info_tags(head[body + 4 : body + length])
            if names is None:
                return None
            tags += names
        elif kind not in _PADDING:
            return None
        at = body + length + (length & 1)
    return None


def _fmt(chunk: bytes) -> tuple[int, int, int, int] | None:
    if len(chunk) not in (16, 18) or (len(chunk) == 18 and chunk[16:18] != b"\0\0"):
        return None
    tag, channels, rate, byte_rate, align, bits = struct.unpack_from("<HHIIHH", chunk)
    if (tag, bits) not in _CODECS or not 1 <= channels <= 8 or not 1000 <= rate <= 768000:
        return None
    if align != channels * bits // 8 or byte_rate != rate * align:
        return None
    return tag, channels, rate, bits


def _info_tags(chunk: bytes) -> list[str] | None:
    """ffmpeg's names of the INFO tags; None when one is malformed or names a place."""
    names: list[str] = []
    at = 0
    while at + 8 <= len(chunk):
        key, length = chunk[at : at + 4], struct.unpack_from("<I", chunk, at + 4)[0]
        if at + 8 + length > len(chunk):
            return None
        name = _INFO_NAMES.get(key) or key.split(b"\0")[0].decode("latin-1")
        if not name or metadata.is_location_tag(name):
            return None
        names.append(name)
        at += 8 + length + (length & 1)
    return names if at == len(chunk) else None


def _info(
    fmt: tuple[int, int, int, int] | None, tags: list[str], head: bytes, start: int, length: int, size: int
) -> MediaInfo | None:
    if fmt is None or length == 0 or start + length > size:
        return None  # no format, no sound, or a header that lies: ffprobe has the last word
    tag, channels, rate, bits = fmt
    probed = head[start : start + min(length, _BITSTREAM_PROBE)]
    if len(probed) < min(length, _BITSTREAM_PROBE) or any(sync in probed for sync in _BITSTREAM_SYNCS):
        return None  # samples ffmpeg would look into that we cannot see, or a bitstream in them
    seconds = length / (channels * bits // 8) / rate
    track = AudioTrack(_CODECS[tag, bits], rate, channels)
    return MediaInfo("wav", seconds, None, track, tags=tuple(dict.fromkeys(tags)))  # once each, as ffprobe

"""Checksums of any file: md5, sha1, sha256, sha512 (and a few more) as JSON or text.

The file is read in chunks, never whole, so its size does not matter; progress follows the
bytes read. The content is never interpreted, which is why every format is accepted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import ClassVar

from converters.base import Converter, Limits, Option, Result, Task

ALGORITHMS: tuple[str, ...] = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512",
                               "sha3_256", "sha3_512", "blake2b", "blake2s")  # fmt: skip
DEFAULT_ALGORITHMS: tuple[str, ...] = ("md5", "sha1", "sha256", "sha512")
CHUNK = 1024 * 1024

# The registry matches exact input formats, so "any file" is spelled out: every format the
# other converters read, plus common ones nobody converts but people still checksum.
_ANY_FORMAT = """
    bin dat raw img iso dmg exe msi dll so deb rpm apk jar class wasm
    txt md rst csv tsv json jsonl ndjson yaml toml xml html xhtml css js ts py sql log ini srt
    vtt ass sub tex rtf ics vcf svg
    pdf ps eps djvu epub mobi azw3 fb2 cbz cbr
    doc docx odt ott dot dotx pages wpd xls xlsx xlsm ods ots numbers ppt pptx odp otp key odg
    png jpg gif bmp tiff webp ico icns heic heif avif jxl jp2 psd tga pcx ppm pgm pbm pnm
    xbm dds exr hdr qoi raw cr2 nef arw dng orf rw2 xcf
    mp3 wav flac ogg opus oga m4a aac wma aiff aif alac amr ac3 mka mid midi weba caf au
    mp4 m4v mov mkv webm avi wmv flv mpg mpeg ts mts m2ts 3gp ogv vob asf f4v
    zip tar gz tgz bz2 tbz2 xz txz zst 7z rar cab lz lzma arj cpio
    ttf otf woff woff2 eot
"""
INPUT_FORMATS: frozenset[str] = frozenset(_ANY_FORMAT.split())


class HashConverter(Converter):
    filetype: ClassVar[str] = "hash"
    engine: ClassVar[str] = "hashlib"
    # the bytes are never interpreted, so the sandbox does not match them to the format
    content_agnostic: ClassVar[bool] = True
    # hashing is I/O bound and tiny in memory; a stuck disk is the only way to be slow
    limits: ClassVar[Limits] = Limits(memory_bytes=1024**3, cpu_seconds=600, wall_seconds=900,
                                      output_bytes=16 * 1024**2)  # fmt: skip

    def pairs(self) -> Mapping[str, frozenset[str]]:
        outputs = frozenset({"json", "txt"})
        return {fmt: outputs for fmt in INPUT_FORMATS}

    def options(self, input_format: str, output_format: str) -> Mapping[str, Option]:
        return {
            "algorithms": Option(
                "array",
                "Checksum algorithms to compute.",
                default=list(DEFAULT_ALGORITHMS),
                enum=ALGORITHMS,
                items="string",
            )
        }

    def convert(self, task: Task) -> Result:
        names = list(dict.fromkeys(task.options.get("algorithms") or DEFAULT_ALGORITHMS))
        digests = {name: hashlib.new(name) for name in names}
        src = task.inputs[0]
        total = max(src.stat().st_size, 1)
        size = 0
        with src.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                for digest in digests.values():
                    digest.update(chunk)
                size += len(chunk)
                task.progress(size / total)
        hexes = {name: digest.hexdigest() for name, digest in digests.items()}
        out = task.workdir / f"{src.name}.{task.output_format}"
        if task.output_format == "json":
            body = {"file": src.name, "size": size, **hexes}
            out.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
        else:
            # BSD "tagged" lines, which `sha256sum -c` and friends read back
            lines = [f"{_tag(name)} ({src.name}) = {value}" for name, value in hexes.items()]
            out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return Result(out)


def _tag(name: str) -> str:
    return {"sha3_256": "SHA3-256", "sha3_512": "SHA3-512", "blake2b": "BLAKE2b",
            "blake2s": "BLAKE2s"}.get(name, name.upper())  # fmt: skip

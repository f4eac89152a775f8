"""HEIF/HEIC for Pillow: decoding in-process with pi-heif, encoding by Debian's `heif-enc`.

pillow-heif's wheels bundle the x265 encoder, which makes the wheel GPL-2.0 as a whole
(its LICENSES_bundled.txt says so), and x265 would run inside our process. pi-heif is the
same project's decoder-only build (libheif and libde265, LGPL-3.0). HEVC encoding needs
x265, so HEIF output runs `heif-enc` (libheif-examples, linked with x265) as a separate
program on a PNG we write, as we run ffmpeg: the GPL then covers that program, not
Convertd. Without `heif-enc` on the PATH, heic/heif are offered as inputs only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO

from PIL import Image

FORMAT = "HEIF"
ENCODE_TIMEOUT = 600  # seconds; the sandbox's own limits stop it earlier


def register_decoder() -> bool:
    """Let Pillow open HEIF/HEIC ("HEIF" format); False when pi-heif is missing."""
    try:
        import pi_heif
    except ImportError:  # pragma: no cover - depends on the machine
        return False
    pi_heif.register_heif_opener()
    return True


def encoder() -> str | None:
    return shutil.which("heif-enc")


def register_encoder() -> bool:
    """Let Pillow save "HEIF" through heif-enc; False when the program is missing."""
    if encoder() is None:
        return False
    Image.register_save(FORMAT, _save)
    return True


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    program = encoder()
    if program is None:
        raise OSError("heif-enc is not installed (Debian package libheif-examples)")
    info = im.encoderinfo
    if im.mode not in ("L", "RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
    args = {key: info[key] for key in ("icc_profile", "exif") if info.get(key)}
    quality = int(info.get("quality", 85))
    # next to the output (the job's folder) when we know it: the sandbox may limit /tmp
    near = os.path.dirname(os.fsdecode(filename)) if filename else None
    with tempfile.TemporaryDirectory(dir=near or None, prefix="heif-") as tmp:
        source, target = Path(tmp, "in.png"), Path(tmp, "out.heic")
        im.save(source, "PNG", compress_level=1, **args)  # heif-enc copies ICC and EXIF over
        done = subprocess.run(
            [program, "-q", str(quality), "-o", str(target), str(source)],
            capture_output=True,
            timeout=ENCODE_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0 or not target.is_file():
            message = (done.stderr or done.stdout).decode("utf-8", "replace").strip()
            raise OSError(f"heif-enc failed: {message[:200]}")
        with target.open("rb") as fh:
            shutil.copyfileobj(fh, fp)

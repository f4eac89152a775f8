"""Shared by the benchmarks: sample files, and `convertd serve` running as a user runs it.

The service is started exactly as the README says (`convertd serve`, embedded PostgreSQL
and Redis, its own worker processes) on a temporary data directory and a free port.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


@dataclass
class Service:
    base: str
    key: str
    pid: int
    data_dir: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(root: Path = ROOT, **env: str) -> Iterator[Service]:
    """`convertd serve` on a fresh data directory, with one key; stopped on the way out.

    `root`: the checkout whose code serves (another version, to compare side by side)."""
    with tempfile.TemporaryDirectory(prefix="cdb") as tmp:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CONVERTD_")}
        environ.update(CONVERTD_DATA_DIR=tmp, **env)
        environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as on users' machines (see PITFALLS)
        port = _free_port()
        cli = [sys.executable, "-m", "app.cli"]
        server = subprocess.Popen(
            [*cli, "serve", "--port", str(port)],
            env=environ,
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/v1/", timeout=1):
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("convertd serve did not start") from None
                    time.sleep(0.2)
            made = subprocess.run(
                [*cli, "keys", "create", "--name", "bench", "--json"],
                env=environ,
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
            )
            key = json.loads(made.stdout.strip().splitlines()[-1])["key"]
            yield Service(base, key, server.pid, tmp)
        finally:
            server.terminate()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()


def photo(width: int, height: int) -> bytes:
    """A JPEG with detail everywhere (fractal plus noise), like a photo to an encoder."""
    fractal = Image.effect_mandelbrot((width, height), (-2.2, -1.3, 0.9, 1.3), 60)
    noise = Image.effect_noise((width, height), 40)
    rgb = Image.merge("RGB", (fractal, noise, fractal.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def ffmpeg_file(path: Path, *args: str) -> Path:
    if not path.exists():
        subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-y", *args, str(path)], check=True)
    return path


def wav(path: Path, seconds: int = 30) -> Path:
    return ffmpeg_file(path, "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-ac", "2")


def video(path: Path, seconds: int = 10) -> Path:
    return ffmpeg_file(
        path,
        "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
    )  # fmt: skip

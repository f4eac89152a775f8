"""The API process's memory while a large upload streams in, per file store.

`convertd serve` runs as the README starts it, once with the local directory and once with
an S3-compatible store (moto's server, started here); a file of SIZE bytes is POSTed to
/v1/upload and the API process's resident memory is sampled throughout. Memory must not
grow with the file: the spool is on disk and the store gets it in parts of a few MiB.

    .venv/bin/python bench/upload_memory.py [size in MiB, default 2048]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.service import _free_port, running

MIB = 1024 * 1024


@contextlib.contextmanager
def moto() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            with contextlib.suppress(Exception):
                boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
                    Bucket="bench"
                )
                break
            time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(60)


class Sampler:
    """The peak resident memory of one process, sampled every 50 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.05)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def measure(label: str, big: Path, **env: str) -> None:
    env = {"CONVERTD_MAX_UPLOAD_BYTES": str(big.stat().st_size + MIB), **env}
    with running(**env) as svc:
        headers = {"X-API-Key": svc.key}
        # RSS after the process's first upload (code loaded, pools filled), then after a
        # few more, one of them in parts (the store client's models for multipart loaded)
        requests.post(f"{svc.base}/v1/upload", headers=headers, files={"file": ("w.bin", b"w" * MIB)})
        first = psutil.Process(svc.pid).memory_info().rss
        for size in (MIB, 20 * MIB, MIB):
            requests.post(f"{svc.base}/v1/upload", headers=headers, files={"file": ("w.bin", b"w" * size)})
        before = psutil.Process(svc.pid).memory_info().rss
        started = time.monotonic()
        with Sampler(svc.pid) as sampler:
            status, body = asyncio.run(_upload(svc.base, svc.key, big))
        seconds = time.monotonic() - started
        assert status == 200, body
        stored = body["files"][0]["file_size"]
        assert stored == big.stat().st_size, stored
        print(
            f"{label:>14}: {stored / MIB:,.0f} MiB upload in {seconds:5.1f} s; API RSS after a first"
            f" small upload {first / MIB:6.1f} MiB, after warm-up {before / MIB:6.1f} MiB, peak"
            f" {sampler.peak / MIB:6.1f} MiB: growth {(sampler.peak - first) / MIB:5.1f} MiB since the"
            f" first upload, {(sampler.peak - before) / MIB:5.1f} MiB since warm-up",
            flush=True,
        )


async def _upload(base: str, key: str, big: Path) -> tuple[int, dict[str, Any]]:
    """A multipart upload streamed from the file (aiohttp sends a file part in chunks)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as http:
        with big.open("rb") as fh:
            form = aiohttp.FormData()
            form.add_field("file", fh, filename=big.name)
            async with http.post(f"{base}/v1/upload", data=form, headers={"X-API-Key": key}) as r:
                return r.status, await r.json()


def main() -> None:
    size = int(sys.argv[1]) * MIB if len(sys.argv) > 1 else 2048 * MIB
    with tempfile.TemporaryDirectory(prefix="cdbu") as tmp:
        big = Path(tmp) / "big.bin"
        with big.open("wb") as fh:  # sparse: no disk for the source itself
            fh.truncate(size)
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        measure("local dir", big)
        with moto() as endpoint:
            measure(
                "object store", big, CONVERTD_STORAGE_URL="s3://bench/up", CONVERTD_S3_ENDPOINT_URL=endpoint
            )


if __name__ == "__main__":
    main()

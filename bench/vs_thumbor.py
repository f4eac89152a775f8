"""Synchronous convert beside thumbor, the image server people pick for resizing.

Both serve the same JPEGs at concurrency 4 for the same time, in turns: thumbor with its
file loader and no result storage (`GET /unsafe/800x0/filters:format(webp)/photo.jpg`),
Convertd with a synchronous convert (`POST /v1/convert` with `wait`, the WebP in the
answer). Prints requests per second of each and the ratio Convertd / thumbor, and the size
of each one's WebP: the same quality (80), encoder effort (libwebp's default method 4),
filter (Lanczos) and JPEG shrink on load on both sides give outputs of about one size.

thumbor lives in its own virtualenv (it pins its own Pillow):

    python3 -m venv ~/.cache/convertd-thumbor && ~/.cache/convertd-thumbor/bin/pip install thumbor
    .venv/bin/python -m bench.vs_thumbor [--thumbor ~/.cache/convertd-thumbor/bin/thumbor]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp

from bench.service import Service, photo, running

DEFAULT_THUMBOR = Path.home() / ".cache/convertd-thumbor/bin/thumbor"
OUTPUT_BYTES: dict[str, int] = {}  # "convertd"/"thumbor" -> size of its last answer
CASES = {  # name: (width, height, target width)
    "2mp-to-800": (1732, 1155, 800),
    "0.3mp-to-320": (640, 480, 320),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def thumbor(binary: Path, images: Path) -> Iterator[str]:
    port = _free_port()
    conf = images / "thumbor.conf"
    conf.write_text(
        "LOADER = 'thumbor.loaders.file_loader'\n"
        f"FILE_LOADER_ROOT_PATH = '{images}'\n"
        "RESULT_STORAGE = None\nSTORAGE = 'thumbor.storages.no_storage'\n"
        "ALLOW_UNSAFE_URL = True\nQUALITY = 80\nWEBP_QUALITY = 80\n"
    )
    proc = subprocess.Popen(
        [str(binary), "-p", str(port), "-c", str(conf), "-l", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthcheck", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("thumbor did not start") from None
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


async def rate(
    request: Callable[[aiohttp.ClientSession], Awaitable[None]], seconds: float, clients: int
) -> float:
    done = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        for _ in range(clients):
            await request(http)  # warm-up
        end = time.monotonic() + seconds

        async def client() -> None:
            nonlocal done
            while time.monotonic() < end:
                await request(http)
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(clients)))
        return done / (time.monotonic() - started)


def convertd_request(service: Service, name: str, data: bytes, width: int) -> Callable[..., Awaitable[None]]:
    async def request(http: aiohttp.ClientSession) -> None:
        form = aiohttp.FormData()
        form.add_field("file", data, filename=name)
        form.add_field("filetype", "image")
        form.add_field("output_format", "webp")
        form.add_field("options", json.dumps({"width": width, "quality": 80}))
        form.add_field("wait", "60")
        async with http.post(
            f"{service.base}/v1/convert", data=form, headers={"X-API-Key": service.key}
        ) as r:
            assert r.status == 200, await r.text()
            OUTPUT_BYTES["convertd"] = len(await r.read())

    return request


def thumbor_request(base: str, name: str, width: int) -> Callable[..., Awaitable[None]]:
    async def request(http: aiohttp.ClientSession) -> None:
        async with http.get(f"{base}/unsafe/{width}x0/filters:format(webp)/{name}") as r:
            assert r.status == 200, r.status
            OUTPUT_BYTES["thumbor"] = len(await r.read())

    return request


async def main(args: argparse.Namespace) -> None:
    binary = Path(os.path.expanduser(args.thumbor))
    if not binary.exists():
        raise SystemExit(f"thumbor not found at {binary}: see this script's docstring for how to install it")
    with (
        tempfile.TemporaryDirectory(prefix="cdth") as tmp,
        running() as service,
        thumbor(binary, Path(tmp)) as th,
    ):
        print(f"concurrency {args.clients}, {args.seconds:g} s each, in turns")
        print(f"{'case':14} {'thumbor/s':>10} {'convertd/s':>11} {'ratio':>6}  webp KB thumbor/convertd")
        for name, (w, h, target) in CASES.items():
            data = photo(w, h)
            (Path(tmp) / f"{name}.jpg").write_bytes(data)
            ours = await rate(
                convertd_request(service, f"{name}.jpg", data, target), args.seconds, args.clients
            )
            theirs = await rate(thumbor_request(th, f"{name}.jpg", target), args.seconds, args.clients)
            kb = f"{OUTPUT_BYTES['thumbor'] / 1024:.1f}/{OUTPUT_BYTES['convertd'] / 1024:.1f}"
            print(f"{name:14} {theirs:10.1f} {ours:11.1f} {ours / theirs:6.2f}  {kb}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--thumbor", default=str(DEFAULT_THUMBOR))
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20)
    asyncio.run(main(parser.parse_args()))

"""The three ways in for one file, side by side: multipart upload, tus, URL import.

Starts `convertd serve` (CONVERTD_ALLOW_PRIVATE_URLS=1, so it may import from the local
origin this script runs) and, in alternating rounds, gets the same random file in:

- multipart: POST /v1/upload, the file as one part;
- tus 8 MB / tus 1 MB: POST /v1/uploads/tus/ then PATCHes of that size;
- URL import: a hash conversion (REST convert, wait) whose input is fetched from a local
  aiohttp origin, against the same conversion with the file sent in the request.

Prints the median seconds of each and the ratios to multipart (resp. to convert-by-file).

    .venv/bin/python -m bench.inputs [--mb 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import aiohttp
from aiohttp import web

from bench.service import Service, running


async def multipart(http: aiohttp.ClientSession, svc: Service, data: bytes) -> None:
    form = aiohttp.FormData()
    form.add_field("file", data, filename="data.bin")
    async with http.post(f"{svc.base}/v1/upload", data=form, headers={"X-API-Key": svc.key}) as r:
        assert r.status == 200, await r.text()


async def tus(http: aiohttp.ClientSession, svc: Service, data: bytes, chunk: int) -> None:
    auth = {"X-API-Key": svc.key, "Tus-Resumable": "1.0.0"}
    headers = {**auth, "Upload-Length": str(len(data)), "Upload-Metadata": "filename ZGF0YS5iaW4="}
    async with http.post(f"{svc.base}/v1/uploads/tus/", headers=headers) as r:
        assert r.status == 201, await r.text()
        url = r.headers["Location"]
    patch = {**auth, "Content-Type": "application/offset+octet-stream"}
    for offset in range(0, len(data), chunk):
        body = data[offset : offset + chunk]
        async with http.patch(url, data=body, headers={**patch, "Upload-Offset": str(offset)}) as r:
            assert r.status == 204, await r.text()
    assert r.headers["X-File-Path"]


async def convert(http: aiohttp.ClientSession, svc: Service, data: bytes | None, url: str | None) -> None:
    form = aiohttp.FormData()
    form.add_field("filetype", "hash")
    form.add_field("output_format", "json")
    form.add_field("wait", "60")
    if data is not None:
        form.add_field("file", data, filename="data.bin")
    else:
        form.add_field("url", url)
    async with http.post(f"{svc.base}/v1/convert", data=form, headers={"X-API-Key": svc.key}) as r:
        assert r.status == 200, await r.text()
        await r.read()


async def main(mb: int, rounds: int) -> None:
    data = os.urandom(mb * 1024 * 1024)
    origin = web.Application()
    origin.router.add_get("/data.bin", lambda _: web.Response(body=data))
    runner = web.AppRunner(origin)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/data.bin"  # type: ignore[union-attr]

    times: dict[str, list[float]] = {}
    with running(CONVERTD_ALLOW_PRIVATE_URLS="1") as svc:
        ways = {
            "multipart upload": lambda http: multipart(http, svc, data),
            "tus, 8 MB PATCHes": lambda http: tus(http, svc, data, 8 * 1024 * 1024),
            "tus, 1 MB PATCHes": lambda http: tus(http, svc, data, 1024 * 1024),
            "convert, file sent": lambda http: convert(http, svc, data, None),
            "convert, url import": lambda http: convert(http, svc, None, url),
        }
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
            for way in ways.values():  # warm-up: first requests pay imports and caches
                await way(http)
            for _ in range(rounds):
                for name, way in ways.items():
                    start = time.perf_counter()
                    await way(http)
                    times.setdefault(name, []).append(time.perf_counter() - start)
    await runner.cleanup()

    med = {name: statistics.median(values) for name, values in times.items()}
    print(f"{mb} MB random file, median of {rounds} alternating rounds")
    for name, seconds in med.items():
        base = med["convert, file sent"] if name.startswith("convert") else med["multipart upload"]
        print(f"  {name:<22} {seconds:7.3f} s   x{seconds / base:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.mb, args.rounds))

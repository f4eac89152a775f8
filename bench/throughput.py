"""End-to-end conversion throughput and latency through the REST API.

Starts embedded PostgreSQL and Redis in a temporary directory, serves the app with its
in-process workers on a local port, submits small image and hash jobs from concurrent
clients, follows each over a jobUpdates subscription, and prints jobs/s and latency percentiles.

    .venv/bin/python bench/throughput.py [--jobs 60] [--clients 8] [--kind image|hash]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from PIL import Image

from app import db, embedded
from app.api.server import build_app
from app.config import QueueSettings, Settings
from app.runtime import Runtime
from app.services.keys import create_account_with_key
from app.worker import build_worker


def sample(kind: str) -> tuple[str, bytes, str]:
    if kind == "hash":
        return "data.bin", b"x" * 100_000, "json"
    buf = io.BytesIO()
    Image.effect_mandelbrot((640, 480), (-2, -1.2, 1, 1.2), 50).convert("RGB").save(buf, "PNG")
    return "photo.png", buf.getvalue(), "webp"


async def one_job(http: aiohttp.ClientSession, base: str, key: str, kind: str) -> float:
    name, data, out = sample(kind)
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name)
    form.add_field("filetype", kind)
    form.add_field("output_format", out)
    start = time.perf_counter()
    async with http.post(f"{base}/v1/convert", data=form, headers={"X-API-Key": key}) as r:
        job = await r.json()
    # follow it the way clients should: a jobUpdates subscription, no polling
    async with http.ws_connect(f"{base}/graphql", protocols=["graphql-transport-ws"]) as ws:
        await ws.send_json({"type": "connection_init", "payload": {"apiKey": key}})
        await ws.receive_json()
        await ws.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {
                    "query": "subscription($id: ID!) { jobUpdates(jobId: $id) { status } }",
                    "variables": {"id": job["job_id"]},
                },
            }
        )
        while True:
            msg = await ws.receive_json()
            if msg["type"] == "complete":
                return time.perf_counter() - start
            if msg["type"] == "next" and msg["payload"]["data"]["jobUpdates"]["status"] == "FAILED":
                raise RuntimeError("job failed")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="cdbench") as tmp:
        servers = embedded.start(Path(tmp))
        try:
            settings = Settings(
                data_dir=Path(tmp),
                database_url=servers.database_url,
                redis_url=servers.redis_url,
                public_url=None,
                secret="bench",
                max_upload_bytes=50 * 1024**2,
                download_url_ttl=600,
                trusted_proxies=(),
                require_https=False,
                queue=QueueSettings(concurrency=args.concurrency),
            )
            await db.migrate(servers.database_url)
            rt = await Runtime.open(settings)
            key = (await create_account_with_key(rt.pool, "bench")).secret
            runner = web.AppRunner(build_app(rt), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
            worker = build_worker(rt)
            task = asyncio.create_task(worker.start())
            latencies: list[float] = []
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(args.jobs):
                queue.put_nowait(i)

            async def client(http: aiohttp.ClientSession) -> None:
                while not queue.empty():
                    queue.get_nowait()
                    latencies.append(await one_job(http, base, key, args.kind))

            async with aiohttp.ClientSession() as http:
                await one_job(http, base, key, args.kind)  # warm-up
                started = time.perf_counter()
                await asyncio.gather(*(client(http) for _ in range(args.clients)))
                elapsed = time.perf_counter() - started
            await worker.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await runner.cleanup()
            await rt.close()
        finally:
            servers.stop()
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    print(f"kind={args.kind} jobs={args.jobs} clients={args.clients} worker_concurrency={args.concurrency}")
    print(f"throughput: {args.jobs / elapsed:.1f} jobs/s")
    print(
        f"latency: p50={p(0.5) * 1000:.0f} ms p95={p(0.95) * 1000:.0f} ms "
        f"max={latencies[-1] * 1000:.0f} ms mean={statistics.mean(latencies) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--kind", choices=("image", "hash"), default="image")
    asyncio.run(main(parser.parse_args()))

"""End-to-end conversion throughput and latency through the REST API.

Starts `convertd serve` as the README does (embedded servers, its own worker processes),
submits tiny hash jobs (1 KB) or small image jobs from concurrent clients, follows each over
a jobUpdates subscription, and prints jobs/s and latency percentiles.

    .venv/bin/python -m bench.throughput [--jobs 200] [--clients 8] [--kind hash|image]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time

import aiohttp
from PIL import Image

from bench.service import running


def sample(kind: str) -> tuple[str, bytes, str]:
    if kind == "hash":
        return "data.bin", b"x" * 1000, "json"
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
    env = {"CONVERTD_WORKER_CONCURRENCY": str(args.concurrency)}
    with running(**env) as service:
        latencies: list[float] = []
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(args.jobs):
            queue.put_nowait(i)

        async def client(http: aiohttp.ClientSession) -> None:
            while not queue.empty():
                queue.get_nowait()
                latencies.append(await one_job(http, service.base, service.key, args.kind))

        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            for _ in range(5):
                await one_job(http, service.base, service.key, args.kind)  # warm-up
            started = time.perf_counter()
            await asyncio.gather(*(client(http) for _ in range(args.clients)))
            elapsed = time.perf_counter() - started
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
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--kind", choices=("image", "hash"), default="hash")
    asyncio.run(main(parser.parse_args()))

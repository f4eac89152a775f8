"""One job, many subscribers: how long after the first of them does each get each event?

Starts `convertd serve` (one worker slot), queues a job that keeps the worker busy, then a
second job and opens N graphql-transport-ws subscriptions to the second one (from several
client processes, so the clients' own work is spread out). When the second job runs, every
subscriber records the wall-clock arrival of each event (status and progress). Prints, over
all events and subscribers, the delay after the first subscriber to get that event: p50,
p99, max.

    .venv/bin/python -m bench.fanout [--subscribers 1000] [--clients 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import signal
import statistics
import subprocess
import time
from pathlib import Path

import aiohttp
import requests

from bench.service import photo, running, video

QUERY = "subscription($id: ID!) { jobUpdates(jobId: $id) { status progress } }"


async def _subscribe(base: str, key: str, job_id: str, count: int, ready: object) -> list[tuple[str, float]]:
    arrivals: list[tuple[str, float]] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(i: int) -> None:
            try:
                await subscriber(i)
            except Exception as exc:  # a subscriber that could not subscribe: said, not hung
                failed.append(f"{type(exc).__name__}: {exc}"[:200])

        async def subscriber(i: int) -> None:
            async with http.ws_connect(
                f"{base.replace('http', 'ws')}/graphql", protocols=["graphql-transport-ws"], max_msg_size=0
            ) as ws:
                await ws.send_json({"type": "connection_init", "payload": {"apiKey": key}})
                assert (await ws.receive_json())["type"] == "connection_ack"
                await ws.send_json(
                    {"id": "1", "type": "subscribe", "payload": {"query": QUERY, "variables": {"id": job_id}}}
                )
                first = True
                while True:
                    msg = await ws.receive_json()
                    now = time.time()
                    if msg["type"] != "next":
                        if first:
                            raise RuntimeError(f"subscription refused: {msg}")
                        return
                    update = msg["payload"]["data"]["jobUpdates"]
                    if first:  # the snapshot, read when subscribing: not an event
                        first = False
                        counted.append(i)
                        continue
                    arrivals.append((f"{update['status']}:{update['progress']}", now))

        counted: list[int] = []
        failed: list[str] = []
        tasks = [asyncio.create_task(one(i)) for i in range(count)]
        while len(counted) + len(failed) < count:
            await asyncio.sleep(0.05)
        if failed:
            print(f"{len(failed)} subscribers failed, e.g. {failed[0]}", flush=True)
        ready.set()  # type: ignore[attr-defined]
        await asyncio.gather(*tasks)
    return arrivals


def _client(base: str, key: str, job_id: str, count: int, ready: object, out: object) -> None:
    arrivals = asyncio.run(_subscribe(base, key, job_id, count, ready))
    out.put(arrivals)  # type: ignore[attr-defined]


def _convert(base: str, key: str, name: str, data: bytes, filetype: str, fmt: str, options: dict) -> str:
    r = requests.post(
        f"{base}/v1/convert",
        headers={"X-API-Key": key},
        files={"file": (name, data)},
        data={"filetype": filetype, "output_format": fmt, "options": json.dumps(options)},
    )
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument(
        "--profile", metavar="PATH",
        help="record the API process with py-spy (pip install py-spy) while the events are"
        " delivered; collapsed stacks to PATH",
    )  # fmt: skip
    args = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server inherits it
    with running(CONVERTD_WORKER_CONCURRENCY="1") as service:
        tmp = Path(service.data_dir)
        blocker = video(tmp / "blocker.mp4", seconds=30)
        busy = _convert(
            service.base, service.key, "blocker.mp4", blocker.read_bytes(), "video", "webm",
            {"codec": "vp9", "preset": "slow"},  # cancelled once all are listening
        )  # fmt: skip
        job_id = _convert(
            service.base, service.key, "photo.jpg", photo(1600, 1200), "image", "webp", {"quality": 80}
        )
        ctx = multiprocessing.get_context("spawn")  # forked aiohttp clients garbled frames
        ready = [ctx.Event() for _ in range(args.clients)]
        out = ctx.Queue()
        share = [
            args.subscribers // args.clients + (i < args.subscribers % args.clients)
            for i in range(args.clients)
        ]
        procs = [
            ctx.Process(target=_client, args=(service.base, service.key, job_id, n, ev, out))
            for n, ev in zip(share, ready, strict=True)
        ]
        for p in procs:
            p.start()
        for ev in ready:
            ev.wait(300)
        status = requests.get(f"{service.base}/v1/status/{job_id}", headers={"X-API-Key": service.key}).json()
        assert status["status"] == "pending", "the blocker ended before every subscriber was ready"
        spy = None
        if args.profile:
            spy = subprocess.Popen(
                ["py-spy", "record", "-p", str(service.pid), "-f", "raw", "-r", "500", "-o", args.profile],
                stdout=subprocess.DEVNULL,
            )
            time.sleep(1)  # py-spy attaches
        requests.post(f"{service.base}/v1/cancel/{busy}", headers={"X-API-Key": service.key})
        arrivals = [a for _ in procs for a in out.get(timeout=600)]
        if spy:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        for p in procs:
            p.join()
    by_event: dict[str, list[float]] = {}
    for event, at in arrivals:
        by_event.setdefault(event, []).append(at)
    delays = sorted(at - min(ats) for ats in by_event.values() for at in ats)
    complete = [e for e, ats in by_event.items() if len(ats) == args.subscribers]
    q = lambda f: delays[min(len(delays) - 1, int(f * len(delays)))] * 1000  # noqa: E731
    print(f"subscribers={args.subscribers} client_processes={args.clients} events={len(by_event)}")
    print(f"events every subscriber got: {len(complete)} of {len(by_event)}")
    print(
        f"delay after the first subscriber: p50={q(0.5):.1f} ms p99={q(0.99):.1f} ms"
        f" max={delays[-1] * 1000:.1f} ms mean={statistics.mean(delays) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()

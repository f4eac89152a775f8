"""What the per-request observability costs: request id, metrics count and JSON access line.

Two apps in one process over the same embedded PostgreSQL and Redis: the app as it ships,
and the same app without `observe_middleware`. Rounds alternate between them (so drifting
load hits both alike); each round sends N authenticated `GET /v1/formats` (auth, rate limit,
request log, JSON body) and `GET /v1/` (no credentials, a small JSON body) with C at a time. Logs go, as
JSON lines, to a file. Prints requests per second per app and the ratio.

    .venv/bin/python -m bench.observe_overhead [--requests 2000] [--concurrency 20] [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from app import db, embedded, logs
from app.api.observe import observe_middleware
from app.api.server import build_app
from app.config import QueueSettings, Settings
from app.runtime import Runtime
from app.services.keys import KeySpec, create_account_with_key


async def _start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


async def _round(http: aiohttp.ClientSession, url: str, headers: dict[str, str], n: int, c: int) -> float:
    left = n

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with http.get(url, headers=headers) as r:
                await r.read()
                assert r.status == 200, r.status

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(c)))
    return n / (time.perf_counter() - started)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="cdo") as tmp:
        handler = logging.FileHandler(Path(tmp) / "log.jsonl")
        handler.setFormatter(logs.formatter())
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        servers = await asyncio.to_thread(embedded.start, Path(tmp))
        try:
            settings = Settings(
                data_dir=Path(tmp), database_url=servers.database_url, redis_url=servers.redis_url,
                public_url=None, secret="bench", max_upload_bytes=1 << 20, download_url_ttl=600,
                trusted_proxies=(), require_https=False, queue=QueueSettings(),
                access_log=not args.no_access_log,
            )  # fmt: skip
            await db.migrate(settings.database_url)  # type: ignore[arg-type]
            rt = await Runtime.open(settings)
            key = (await create_account_with_key(rt.pool, "bench", spec=KeySpec(name="bench"),
                                                 server_secret="bench")).secret  # fmt: skip
            shipped = build_app(rt)
            bare = build_app(rt)
            if not args.same:  # --same: both apps as shipped, to see the noise
                bare.middlewares.remove(observe_middleware)
            runners = [await _start(shipped), await _start(bare)]
            results: dict[tuple[str, str], list[float]] = {}
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                for path, headers in (("/v1/formats", {"X-API-Key": key}), ("/v1/", {})):
                    for _, base in runners:
                        await _round(http, base + path, headers, 200, args.concurrency)  # warm-up
                    for i in range(args.rounds):
                        order = list(zip(runners, ("observed", "bare"), strict=True))
                        for (_, base), name in order if i % 2 == 0 else order[::-1]:
                            rate = await _round(http, base + path, headers, args.requests, args.concurrency)
                            results.setdefault((path, name), []).append(rate)
            for runner, _ in runners:
                await runner.cleanup()
            await rt.close()
        finally:
            await asyncio.to_thread(servers.stop)
    for path in ("/v1/formats", "/v1/"):
        observed = statistics.median(results[(path, "observed")])
        bare_rate = statistics.median(results[(path, "bare")])
        print(
            f"{path:<12} observed {observed:8.0f} req/s   without {bare_rate:8.0f} req/s   "
            f"ratio {observed / bare_rate:.3f}   (median of {args.rounds} rounds of {args.requests})"
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--no-access-log", action="store_true", help="observe, but write no access lines")
    p.add_argument("--same", action="store_true", help="A/A run: both apps with the middleware")
    asyncio.run(main(p.parse_args()))

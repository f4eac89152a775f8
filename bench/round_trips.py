"""Count the PostgreSQL and Redis round trips of one job, from request to download.

Runs the app and one worker in this process against embedded servers, converts a small
file over REST (convert, then events until it ends, then download), and prints how many
round trips each side made, by phase. The count is exact: every asyncpg query and every
Redis command or pipeline is one trip.

    .venv/bin/python bench/round_trips.py [--jobs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio.client
from aiohttp import web

from app import db, embedded
from app.api.server import build_app
from app.config import QueueSettings, Settings
from app.runtime import Runtime
from app.services.keys import create_account_with_key
from app.worker import build_worker

counts: collections.Counter[str] = collections.Counter()
statements: collections.Counter[str] = collections.Counter()
phase = "setup"


def _count(kind: str, what: str) -> None:
    counts[f"{phase}:{kind}"] += 1
    if phase != "setup":
        statements[f"{kind} {what[:90]}"] += 1


def instrument() -> None:
    for name in ("_execute", "execute", "_executemany"):
        original = getattr(asyncpg.connection.Connection, name)

        def wrapped(self: Any, query: str, *a: Any, __original: Any = original, **k: Any) -> Any:
            _count("pg", " ".join(str(query).split()))
            return __original(self, query, *a, **k)

        setattr(asyncpg.connection.Connection, name, wrapped)
    original_cmd = redis.asyncio.client.Redis.execute_command

    async def command(self: Any, *args: Any, **kwargs: Any) -> Any:
        _count("redis", " ".join(str(a) for a in args[:2]))
        return await original_cmd(self, *args, **kwargs)

    redis.asyncio.client.Redis.execute_command = command  # type: ignore[method-assign]
    original_pipe = redis.asyncio.client.Pipeline.execute

    async def pipeline(self: Any, *args: Any, **kwargs: Any) -> Any:
        _count("redis", "pipeline " + ",".join(str(c[0][0]) for c in self.command_stack))
        return await original_pipe(self, *args, **kwargs)

    redis.asyncio.client.Pipeline.execute = pipeline  # type: ignore[method-assign]


async def one_job(http: aiohttp.ClientSession, base: str, key: str) -> None:
    global phase
    headers = {"X-API-Key": key}
    form = aiohttp.FormData()
    form.add_field("file", b"x" * 1000, filename="data.bin")
    form.add_field("filetype", "hash")
    form.add_field("output_format", "json")
    phase = "convert"
    async with http.post(f"{base}/v1/convert", data=form, headers=headers) as r:
        job = await r.json()
    phase = "events+worker"
    async with http.get(f"{base}/v1/events/{job['job_id']}", headers=headers) as r:
        async for _line in r.content:
            pass
    phase = "download"
    async with http.get(f"{base}/v1/download/{job['job_id']}", headers=headers) as r:
        assert r.status == 200, await r.text()
        await r.read()
    phase = "idle"


async def main(args: argparse.Namespace) -> None:
    global phase
    instrument()
    with tempfile.TemporaryDirectory(prefix="cdrt") as tmp:
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
                queue=QueueSettings(concurrency=1),
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
            async with aiohttp.ClientSession() as http:
                await one_job(http, base, key)  # warm-up
                counts.clear()
                statements.clear()
                for _ in range(args.jobs):
                    await one_job(http, base, key)
                phase = "setup"
            await worker.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await runner.cleanup()
            await rt.close()
        finally:
            servers.stop()
    print(f"round trips per job (mean of {args.jobs}; a tiny hash job over REST):")
    for name in sorted(k for k in counts if not k.startswith(("setup", "idle"))):
        print(f"  {name:28} {counts[name] / args.jobs:6.1f}")
    total = sum(v for k, v in counts.items() if not k.startswith(("setup", "idle")))
    print(f"  {'total':28} {total / args.jobs:6.1f}")
    if args.verbose:
        for stmt, n in statements.most_common():
            print(f"  {n / args.jobs:5.1f}  {stmt}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("-v", "--verbose", action="store_true")
    asyncio.run(main(parser.parse_args()))

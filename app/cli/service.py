"""serve, worker, migrate: the commands that run the service, and the servers they need.

Without CONVERTD_DATABASE_URL and CONVERTD_REDIS_URL, `servers()` starts private embedded
PostgreSQL and Redis for as long as a command runs (app/embedded.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import ssl
import sys
from collections.abc import AsyncIterator

from app import db, embedded, processes
from app.config import Settings


@contextlib.asynccontextmanager
async def servers(settings: Settings, *, redis: bool = True) -> AsyncIterator[Settings]:
    """The configured servers, or private embedded ones for as long as the block runs."""
    configured = settings.database_url and (settings.redis_url or not redis)
    if configured:
        yield settings
        return
    started = await asyncio.to_thread(embedded.start, settings.data_dir, redis=redis)
    keeper = asyncio.create_task(embedded.supervise(started), name="convertd-embedded-servers")
    try:
        yield dataclasses.replace(settings, database_url=started.database_url, redis_url=started.redis_url)
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        await asyncio.to_thread(started.stop)


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from app.api.server import build_app
    from app.runtime import Runtime
    from app.worker import build_worker

    async with servers(Settings.from_env()) as settings:
        await db.migrate(settings.database)
        rt = await Runtime.open(settings)
        runner = web.AppRunner(build_app(rt), access_log=None)
        await runner.setup()
        tls = None
        if args.tls_cert:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(args.tls_cert, args.tls_key)
        site = web.TCPSite(runner, args.host, args.port, ssl_context=tls)
        await site.start()
        count = processes.default_count() if args.worker_processes is None else args.worker_processes
        children = processes.WorkerProcesses(settings, count) if args.workers and count else None
        worker = build_worker(rt) if args.workers and not children else None
        worker_task = asyncio.create_task(worker.start()) if worker else None
        if children:
            await children.start()
        scheme = "https" if tls else "http"
        where = (
            f"{count} worker process(es)" if children else ("in-process workers" if worker else "no workers")
        )
        print(
            f"Convertd listening on {scheme}://{args.host}:{args.port} (GraphQL at /graphql, REST at /v1/),"
            f" {where}",
            flush=True,
        )
        try:
            await _until_stopped()
        finally:
            print("Convertd stopping...", flush=True)
            if children:
                await children.stop()
            if worker and worker_task:
                await worker.stop()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker_task
            await runner.cleanup()
            await rt.close()


async def worker(args: argparse.Namespace) -> None:
    from app.runtime import Runtime
    from app.worker import build_worker

    settings = Settings.from_env()
    if settings.embedded:
        sys.exit("convertd worker needs CONVERTD_DATABASE_URL and CONVERTD_REDIS_URL")
    rt = await Runtime.open(settings, api=False)
    w = build_worker(rt)
    task = asyncio.create_task(w.start())
    stopped = asyncio.create_task(_until_stopped())
    try:
        # a worker that stops by itself (its start failed) must not idle on: the process
        # exits, and whoever supervises it (serve, systemd) starts another
        await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        await w.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await rt.close()


async def migrate(args: argparse.Namespace) -> None:
    async with servers(Settings.from_env(), redis=False) as settings:
        applied = await db.migrate(settings.database)
        print("applied: " + ", ".join(applied) if applied else "database is up to date")

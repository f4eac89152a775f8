"""`convertd`: serve, worker, migrate, keys, doctor."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import ssl
import sys
from collections.abc import AsyncIterator

from app import db, embedded
from app.config import Settings

log = logging.getLogger("convertd")


@contextlib.asynccontextmanager
async def servers(settings: Settings, *, redis: bool = True) -> AsyncIterator[Settings]:
    """The configured servers, or private embedded ones for as long as the block runs."""
    configured = settings.database_url and (settings.redis_url or not redis)
    if configured:
        yield settings
        return
    started = await asyncio.to_thread(embedded.start, settings.data_dir, redis=redis)
    try:
        yield dataclasses.replace(settings, database_url=started.database_url, redis_url=started.redis_url)
    finally:
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
        await db.migrate(settings.database_url)  # type: ignore[arg-type]
        rt = await Runtime.open(settings)
        runner = web.AppRunner(build_app(rt), access_log=None)
        await runner.setup()
        tls = None
        if args.tls_cert:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(args.tls_cert, args.tls_key)
        site = web.TCPSite(runner, args.host, args.port, ssl_context=tls)
        await site.start()
        worker = build_worker(rt) if args.workers else None
        worker_task = asyncio.create_task(worker.start()) if worker else None
        scheme = "https" if tls else "http"
        print(
            f"Convertd listening on {scheme}://{args.host}:{args.port} (GraphQL at /graphql, REST at /v1/)",
            flush=True,
        )
        try:
            await _until_stopped()
        finally:
            print("Convertd stopping...", flush=True)
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
    rt = await Runtime.open(settings, with_hub=False)
    w = build_worker(rt)
    task = asyncio.create_task(w.start())
    try:
        await _until_stopped()
    finally:
        await w.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await rt.close()


async def migrate(args: argparse.Namespace) -> None:
    async with servers(Settings.from_env(), redis=False) as settings:
        applied = await db.migrate(settings.database_url)  # type: ignore[arg-type]
        print("applied: " + ", ".join(applied) if applied else "database is up to date")


async def keys_create(args: argparse.Namespace) -> None:
    from app.services.keys import create_account_with_key

    async with servers(Settings.from_env(), redis=False) as settings:
        await db.migrate(settings.database_url)  # type: ignore[arg-type]
        pool = await db.create_pool(settings.database_url)  # type: ignore[arg-type]
        try:
            created = await create_account_with_key(pool, args.name, plan=args.plan, environment=args.env)
        finally:
            await pool.close()
    key = created.key
    if args.json:
        print(
            json.dumps(
                {
                    "key": created.secret,
                    "key_id": key.id,
                    "kid": str(key.kid),
                    "name": key.name,
                    "environment": key.environment,
                    "plan": args.plan,
                }
            )
        )
    else:
        print(f"API key for '{key.name}' (id {key.id}, kid {key.kid}):\n\n  {created.secret}\n")
        print("It is shown only this once; store it now.")


async def doctor(args: argparse.Namespace) -> None:
    import tempfile
    from pathlib import Path

    from converters import sandbox
    from converters.registry import registry

    reg = registry()
    for filetype, group in reg.formats().items():
        print(f"ok       {filetype}: {len(group['input_formats'])} input, "
              f"{len(group['output_formats'])} output formats")
    missing = reg.unavailable()
    for name, reason in sorted(missing.items()):
        print(f"missing  {name}: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.txt"
        probe.write_text("convertd")
        await sandbox.run("hash", "txt", "txt", {}, [probe], Path(tmp) / "work")
    if sandbox.network_isolated:
        print("ok       conversions run in a private network namespace (no network)")
    else:
        print("warning  conversions can reach the network: the kernel refused a network namespace")
    if missing:
        sys.exit(1)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="convertd", description="Self-hosted file conversion.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the API (and workers); embedded servers by default")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--tls-cert")
    s.add_argument("--tls-key")
    s.add_argument(
        "--no-workers",
        dest="workers",
        action="store_false",
        help="serve the API only; run `convertd worker` elsewhere",
    )
    s.set_defaults(func=serve)

    sub.add_parser("worker", help="run workers only, against the configured servers").set_defaults(
        func=worker
    )
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=migrate)
    sub.add_parser("doctor", help="report which conversion engines work here").set_defaults(func=doctor)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys", required=True)
    k = keys.add_parser("create", help="create an account and its first key")
    k.add_argument("--name", required=True)
    k.add_argument("--plan", default="pro")
    k.add_argument("--env", default="live", choices=("live", "test"))
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=keys_create)
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    if (args.tls_cert if hasattr(args, "tls_cert") else False) and not args.tls_key:
        sys.exit("--tls-cert needs --tls-key")
    result = args.func(args)
    if asyncio.iscoroutine(result):
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(result)


if __name__ == "__main__":
    main()

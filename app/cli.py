"""`convertd`: serve, worker, migrate, keys, doctor; convert and formats (app/client/)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from app import db, embedded, logs, processes
from app.config import Settings
from app.errors import ConvertdError

if TYPE_CHECKING:
    import asyncpg

    from app.models import Plan

log = logging.getLogger("convertd")
_NOT_GIVEN = object()  # a plan setting the command line did not mention stays as it is


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


@contextlib.asynccontextmanager
async def _pool() -> AsyncIterator[tuple[Settings, asyncpg.Pool]]:
    """A migrated database for one operator command."""
    async with servers(Settings.from_env(), redis=False) as settings:
        await db.migrate(settings.database)
        pool = await db.create_pool(settings.database)
        try:
            yield settings, pool
        finally:
            await pool.close()


def _fail(err: ConvertdError) -> None:
    sys.exit(f"error: {err.message}" + (f"\nhint: {err.hint}" if err.hint else ""))


async def keys_create(args: argparse.Namespace) -> None:
    from app.services import keys as keys_service
    from app.services.accounts import get_account

    spec = keys_service.KeySpec(
        name=args.name,
        environment=args.env,
        allowed_ips=args.ip,
        allowed_domains=args.domain,
        allowed_endpoints=args.endpoint,
        conversion_limit=args.conversion_limit,
    )
    async with _pool() as (settings, pool):
        try:
            if args.account is None:
                created = await keys_service.create_account_with_key(
                    pool, args.name, plan=args.plan, spec=spec, server_secret=settings.secret
                )
            else:
                created = await keys_service.create_key(
                    pool, args.account, spec, server_secret=settings.secret
                )
            plan = (await get_account(pool, created.key.account_id)).plan.name
        except ConvertdError as err:
            _fail(err)
    key = created.key
    if args.json:
        print(
            json.dumps(
                {
                    "key": created.secret,
                    "signing_secret": created.signing_secret,
                    "webhook_secret": created.webhook_secret,
                    **key.public(),
                    "plan": plan,
                }
            )
        )
    else:
        print(
            f"API key for '{key.name}' (id {key.id}, kid {key.kid}, account {key.account_id}):"
            f"\n\n  {created.secret}\n"
        )
        print(f"JWT signing secret for kid {key.kid}:\n\n  {created.signing_secret}\n")
        print(f"Webhook secret (verifies X-Convertd-Signature):\n\n  {created.webhook_secret}\n")
        print("They are shown only this once; store them now.")


async def keys_list(args: argparse.Namespace) -> None:
    from app.services.keys import list_keys

    async with _pool() as (_, pool):
        found = await list_keys(pool, args.account)
    if args.json:
        print(json.dumps([k.public() for k in found]))
        return
    print(f"{'ID':>5}  {'ACCOUNT':>7}  {'PREFIX':<16}  {'ENV':<4}  {'RESTRICTION':<11}  {'STATE':<7}  NAME")
    for k in found:
        state = "revoked" if k.revoked_at else "active"
        print(
            f"{k.id:>5}  {k.account_id:>7}  {k.prefix:<16}  {k.environment:<4}  {k.restriction_type:<11}  "
            f"{state:<7}  {k.name}"
        )


async def keys_revoke(args: argparse.Namespace) -> None:
    from app.services.keys import revoke_key

    async with _pool() as (_, pool):
        try:
            key = await revoke_key(pool, None, args.id)
        except ConvertdError as err:
            _fail(err)
    print(f"revoked key {key.id} ({key.name}); it is refused from now on")


async def keys_rotate(args: argparse.Namespace) -> None:
    from app.services.keys import rotate_secret

    async with _pool() as (settings, pool):
        try:
            key, secret = await rotate_secret(pool, None, args.id, args.secret, settings.secret)
        except ConvertdError as err:
            _fail(err)
    if args.json:
        print(json.dumps({**key.public(), "rotated": args.secret, "secret": secret}))
        return
    what = "JWT signing secret" if args.secret == "jwt" else "webhook secret"
    print(f"new {what} for key {key.id} ({key.name}), shown only this once:\n\n  {secret}\n")
    print("The old one no longer works; the key itself is unchanged.")


async def keys_rename(args: argparse.Namespace) -> None:
    from app.services.keys import update_key

    async with _pool() as (_, pool):
        try:
            key = await update_key(pool, None, args.id, name=args.name)
        except ConvertdError as err:
            _fail(err)
    print(f"key {key.id} is now named '{key.name}'")


async def keys_jwt(args: argparse.Namespace) -> None:
    from app.services.tokens import mint_for_key

    async with _pool() as (settings, pool):
        try:
            minted = await mint_for_key(pool, settings.secret, args.id, args.ttl)
        except ConvertdError as err:
            _fail(err)
    if args.json:
        print(
            json.dumps(
                {"token": minted.token, "kid": str(minted.kid), "expires_at": minted.expires_at.isoformat()}
            )
        )
    else:
        print(minted.token)


def _ttl(value: str) -> int:
    from app.auth.jwts import MAX_MINTED_LIFETIME
    from app.services.plans import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if not 1 <= seconds <= MAX_MINTED_LIFETIME:
        raise argparse.ArgumentTypeError("from 1s to 24h: minted JWTs are for short-lived use")
    return seconds


def _count_or_unlimited(value: str) -> int | None:
    if value.lower() in ("unlimited", "none"):
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("a whole number or 'unlimited'") from exc


_FOREVER = ("forever", "unlimited", "none", "off")


def _duration(value: str) -> int | None:
    from app.services.plans import parse_duration

    if value.lower() in _FOREVER:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, or 'forever'") from exc


def _size(value: str) -> int | None:
    from app.services.plans import parse_size

    if value.lower() in _FOREVER:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, or 'unlimited'") from exc


def _on_off(value: str) -> bool:
    if value.lower() not in ("on", "off"):
        raise argparse.ArgumentTypeError("on or off")
    return value.lower() == "on"


async def plans_set(args: argparse.Namespace) -> None:
    from app.services.plans import set_plan

    given = {
        name: getattr(args, name)
        for name in (
            "api_access",
            "calls_per_day",
            "calls_per_minute",
            "max_file_size",
            "conversions",
            "retention",
            "storage_quota",
            "max_pending",
            "max_running",
        )
        if getattr(args, name) is not _NOT_GIVEN
    }
    async with _pool() as (_, pool):
        try:
            plan = await set_plan(pool, args.name, **given)
        except ConvertdError as err:
            _fail(err)
    _print_plans([plan], args.json)


async def plans_list(args: argparse.Namespace) -> None:
    from app.services.plans import list_plans

    async with _pool() as (_, pool):
        found = await list_plans(pool)
    _print_plans(found, args.json)


def _print_plans(plans: list[Plan], as_json: bool) -> None:
    if as_json:
        print(json.dumps([dataclasses.asdict(p) for p in plans]))
        return

    from app.services.plans import human_duration

    def show(value: int | None) -> str:
        return "unlimited" if value is None else f"{value:,}"

    print(
        f"{'PLAN':<12} {'API':<4} {'CALLS/DAY':>10} {'CALLS/MIN':>10} {'MAX FILE':>14} {'CONVERSIONS':>12}"
        f" {'RETENTION':>9} {'STORAGE':>16} {'MAX PENDING':>11}"
        f" {'RUNNING':>10}"
    )
    for p in plans:
        print(
            f"{p.name:<12} {'on' if p.api_access else 'off':<4} {show(p.calls_per_day):>10} "
            f"{show(p.calls_per_minute):>10} {show(p.max_file_size):>14} {show(p.conversions):>12}"
            f" {human_duration(p.retention):>9} {show(p.storage_quota):>16} {show(p.max_pending):>11}"
            f" {show(p.max_running):>10}"
        )


async def accounts_master_token(args: argparse.Namespace) -> None:
    from app.services.accounts import issue_master_token

    async with _pool() as (_, pool):
        try:
            token = await issue_master_token(pool, args.account)
        except ConvertdError as err:
            _fail(err)
    if args.json:
        print(json.dumps({"account_id": args.account, "master_token": token}))
    else:
        print(f"Master token for account {args.account} (any previous one no longer works):\n\n  {token}\n")
        print("It is shown only this once; store it now. It is for administration only.")


async def doctor(args: argparse.Namespace) -> None:
    import tempfile
    from pathlib import Path

    from converters.registry import registry
    from converters.sandbox import parent as sandbox
    from converters.sandbox import servers
    from converters.sandbox.failures import SandboxError

    reg = registry()
    for filetype, group in reg.formats().items():
        print(
            f"ok       {filetype}: {len(group['input_formats'])} input, "
            f"{len(group['output_formats'])} output formats"
        )
    missing = reg.unavailable()
    for name, reason in sorted(missing.items()):
        print(f"missing  {name}: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.txt"
        probe.write_text("convertd")
        try:
            await sandbox.run("hash", "txt", "txt", {}, [probe], Path(tmp) / "work")
        except SandboxError as exc:
            print(f"error    a test conversion failed: {exc.message} ({exc.detail.strip()[:200]})")
    from converters.sandbox import isolation

    layers = servers.layers or {}
    for name in isolation.LAYERS:
        state = "ok      " if layers.get(name) else "warning "
        print(f"{state} sandbox layer {name}: {isolation.LAYER_DESCRIPTIONS[name]}"
              + ("" if layers.get(name) else " -- NOT ACTIVE on this machine"))  # fmt: skip
    missing_layers = [name for name in isolation.LAYERS if not layers.get(name)]
    if servers.strict():
        print(
            "ok       CONVERTD_SANDBOX=strict: conversions are refused while a layer is missing"
            if not missing_layers
            else f"error    CONVERTD_SANDBOX=strict and {', '.join(missing_layers)} missing: "
            "every conversion is refused"
        )
    elif missing_layers:
        print("warning  conversions run without the layers above (CONVERTD_SANDBOX=strict would refuse)")
    from converters.tools import process

    if layers.get("mount") and layers.get("seccomp"):
        print("ok       LibreOffice and pandoc run inside each job's sandbox")
    elif process.isolation_used():
        print("ok       LibreOffice and pandoc run in their own namespaces (only /usr visible)")
    else:
        print("warning  LibreOffice and pandoc run without namespace isolation")
    _doctor_office_pool(Settings.from_env().queue.concurrency)
    _doctor_fonts()
    if reg.missing:  # a whole engine is gone; optional formats (calibre's) are only reported
        sys.exit(1)


def _doctor_fonts() -> None:
    """Which writing systems documents and SVGs can show, and the Office stand-ins."""
    from converters.tools import fonts

    for missing in fonts.missing_dirs():
        print(f"warning  {fonts.FONTS_ENV}: {missing} is not a folder; its fonts are not used")
    for folder in fonts.extra_dirs():
        print(f"ok       fonts: {folder} ({fonts.FONTS_ENV}) is used by LibreOffice, pandoc and SVG")
    cover = fonts.coverage()
    if cover.error:
        print(f"warning  fonts: cannot tell which scripts are covered: {cover.error}")
        return
    for name, families in cover.scripts.items():
        if families:
            more = f" and {len(families) - 1} more" if len(families) > 1 else ""
            print(f"ok       fonts: {name} script ({families[0]}{more})")
        else:
            print(f"warning  fonts: no font for the {name} script: its text comes out as empty boxes")
    for office_font, stand_in in cover.metric.items():
        if stand_in:
            print(f"ok       fonts: {office_font} laid out with {stand_in} (same metrics)")
        else:
            print(f"warning  fonts: no metric-compatible font for {office_font}: its documents change layout")
    if cover.missing_packages:
        print(f"warning  fonts: install the Debian packages {' '.join(cover.missing_packages)}")


def _doctor_office_pool(concurrency: int) -> None:
    from converters.tools.office import jail as office_jail
    from converters.tools.office import pool as office_pool

    try:
        settings, layers, error = office_pool.probe(concurrency)
    except ValueError as exc:  # a bad CONVERTD_OFFICE_* setting
        print(f"error    LibreOffice pool: {exc}")
        return
    modes = {
        "account": "an instance serves one account at a time, restarted before another",
        "none": "a fresh instance for every job",
        "all": "instances shared by all accounts: single-tenant deployments only",
    }
    if settings.instances == 0:
        print("warning  LibreOffice pool off (CONVERTD_OFFICE_INSTANCES=0): office jobs start soffice cold")
        return
    print(
        f"ok       LibreOffice pool: {settings.instances} warm instance(s) per worker, "
        f"reuse={settings.reuse} ({modes[settings.reuse]}), "
        f"restart after {settings.restart_after} conversions"
    )
    if error:
        print(f"warning  LibreOffice pool cannot start an instance: {error}")
        return
    for ok, text in office_jail.describe(settings.memory, layers):
        print(f"{'ok      ' if ok else 'warning '} LibreOffice instance: {text}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="convertd", description="Self-hosted file conversion.")
    sub = p.add_subparsers(dest="command", required=True)
    _serve_commands(sub)
    _keys_commands(sub)
    _plans_commands(sub)
    _accounts_commands(sub)
    from app.client.commands import add_commands

    add_commands(sub)  # convert, formats: a client of a running server
    return p


def _serve_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """serve, worker, migrate, doctor."""
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
    s.add_argument(
        "--worker-processes",
        type=int,
        default=None,
        help="worker processes beside the API (default: 1 when the machine has more than one "
        "core; 0 runs the workers inside the API process)",
    )
    s.set_defaults(func=serve)

    sub.add_parser("worker", help="run workers only, against the configured servers").set_defaults(
        func=worker
    )
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=migrate)
    sub.add_parser("doctor", help="report which conversion engines work here").set_defaults(func=doctor)


def _keys_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys", required=True)
    k = keys.add_parser("create", help="create a key (and, without --account, its account)")
    k.add_argument("--name", required=True)
    k.add_argument("--plan", default="pro", help="the new account's plan")
    k.add_argument("--account", type=int, help="add the key to this existing account")
    k.add_argument("--env", default="live", choices=("live", "test"))
    k.add_argument("--ip", action="append", default=[], help="allowed address or CIDR (repeat)")
    k.add_argument("--domain", action="append", default=[], help="allowed domain or *.domain (repeat)")
    k.add_argument("--endpoint", action="append", default=[], help="allowed REST path or GraphQL field")
    k.add_argument("--conversion-limit", type=int, help="conversions this key may queue")
    k.add_argument("--json", action="store_true", help="key, kid and JWT signing secret as JSON")
    k.set_defaults(func=keys_create)
    kl = keys.add_parser("list", help="list keys (never their secrets)")
    kl.add_argument("--account", type=int)
    kl.add_argument("--json", action="store_true")
    kl.set_defaults(func=keys_list)
    kr = keys.add_parser("revoke", help="revoke a key at once")
    kr.add_argument("id", type=int)
    kr.set_defaults(func=keys_revoke)
    kt = keys.add_parser("rotate", help="replace a key's JWT signing or webhook secret, keeping the key")
    kt.add_argument("id", type=int)
    kt.add_argument("--secret", choices=("jwt", "webhook"), required=True)
    kt.add_argument("--json", action="store_true")
    kt.set_defaults(func=keys_rotate)
    kn = keys.add_parser("rename", help="rename a key")
    kn.add_argument("id", type=int)
    kn.add_argument("name")
    kn.set_defaults(func=keys_rename)

    kj = keys.add_parser("jwt", help="print a JWT for a key (for the web page; never hand out the key)")
    kj.add_argument("id", type=int, metavar="KEY_ID")
    kj.add_argument("--ttl", type=_ttl, default=3600, metavar="1h", help="lifetime, at most 24h (default 1h)")
    kj.add_argument("--json", action="store_true", help="token, kid and expiry as JSON")
    kj.set_defaults(func=keys_jwt)


def _plans_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    plans = sub.add_parser("plans", help="configure plans").add_subparsers(dest="plans", required=True)
    ps = plans.add_parser("set", help="create a plan or change its settings")
    ps.add_argument("name")
    ps.add_argument("--api-access", type=_on_off, default=_NOT_GIVEN, metavar="on|off")
    limits = ("--calls-per-day", "--calls-per-minute", "--max-file-size", "--conversions", "--max-running")
    for flag in limits:
        ps.add_argument(flag, type=_count_or_unlimited, default=_NOT_GIVEN, metavar="N|unlimited")
    ps.add_argument(
        "--retention",
        type=_duration,
        default=_NOT_GIVEN,
        metavar="24h|7d|forever",
        help="how long a job's files are kept after it ends (uploads: after they arrive)",
    )
    ps.add_argument(
        "--storage-quota",
        type=_size,
        default=_NOT_GIVEN,
        metavar="2GB|unlimited",
        help="bytes of uploads and outputs one account may keep",
    )
    ps.add_argument(
        "--max-pending",
        type=_count_or_unlimited,
        default=_NOT_GIVEN,
        metavar="N|unlimited",
        help="jobs one account may have waiting in the queue; more are refused with 429",
    )
    ps.add_argument("--json", action="store_true")
    ps.set_defaults(func=plans_set)
    pl = plans.add_parser("list", help="list plans")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=plans_list)


def _accounts_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    accounts = sub.add_parser("accounts", help="account administration").add_subparsers(
        dest="accounts", required=True
    )
    am = accounts.add_parser("master-token", help="issue the account's master token (replaces the old one)")
    am.add_argument("account", type=int)
    am.add_argument("--json", action="store_true")
    am.set_defaults(func=accounts_master_token)


def _metrics_folder(data_dir: Path) -> None:
    """Multiprocess metrics (app/metrics.py): a fresh folder the API and its worker processes
    share, named before anything imports prometheus_client (it reads the variable once, on
    import). A folder the operator named is used as it is: they empty it between runs."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    folder = data_dir / "metrics"
    shutil.rmtree(folder, ignore_errors=True)  # counts start again with the service
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def main(argv: list[str] | None = None) -> None:
    logs.configure()
    args = parser().parse_args(argv)
    if args.command == "serve":
        _metrics_folder(Settings.from_env().data_dir)
    if args.command in ("serve", "worker"):
        from app.stores import check_url

        try:
            check_url(Settings.from_env().storage_url)
        except ValueError as exc:
            sys.exit(f"error: {exc}")
    if (args.tls_cert if hasattr(args, "tls_cert") else False) and not args.tls_key:
        sys.exit("--tls-cert needs --tls-key")
    result = args.func(args)
    if asyncio.iscoroutine(result):
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(result)


if __name__ == "__main__":
    main()

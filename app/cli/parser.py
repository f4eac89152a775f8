"""The command line: every command's arguments, the values they accept, and `main`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
from pathlib import Path

from app import logs
from app.cli.admin import (
    NOT_GIVEN,
    accounts_master_token,
    keys_create,
    keys_jwt,
    keys_list,
    keys_rename,
    keys_revoke,
    keys_rotate,
    plans_list,
    plans_set,
)
from app.cli.doctor import doctor
from app.cli.service import migrate, serve, worker
from app.config import Settings


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
    ps.add_argument("--api-access", type=_on_off, default=NOT_GIVEN, metavar="on|off")
    limits = ("--calls-per-day", "--calls-per-minute", "--max-file-size", "--conversions", "--max-running")
    for flag in limits:
        ps.add_argument(flag, type=_count_or_unlimited, default=NOT_GIVEN, metavar="N|unlimited")
    ps.add_argument(
        "--retention",
        type=_duration,
        default=NOT_GIVEN,
        metavar="24h|7d|forever",
        help="how long a job's files are kept after it ends (uploads: after they arrive)",
    )
    ps.add_argument(
        "--storage-quota",
        type=_size,
        default=NOT_GIVEN,
        metavar="2GB|unlimited",
        help="bytes of uploads and outputs one account may keep",
    )
    ps.add_argument(
        "--max-pending",
        type=_count_or_unlimited,
        default=NOT_GIVEN,
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
    try:
        _main(argv)
    except BrokenPipeError:
        # the reader went away (`convertd formats | head`): stop quietly, as other commands
        # do, instead of a traceback; stdout goes to /dev/null so the exit flush cannot fail
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)


def _main(argv: list[str] | None) -> None:
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

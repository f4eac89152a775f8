"""keys, plans, accounts: the operator's commands, run straight against the database.

Each opens a migrated database for itself (`_pool`), calls one service, and prints what it
got (or JSON with --json); a refused operation exits with the error and its hint.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from app import db
from app.cli.service import servers
from app.config import Settings
from app.errors import ConvertdError

if TYPE_CHECKING:
    import asyncpg

    from app.models import Plan


NOT_GIVEN = object()  # a plan setting the command line did not mention stays as it is


@contextlib.asynccontextmanager
async def _pool() -> AsyncIterator[tuple[Settings, asyncpg.Pool]]:
    """A migrated database for one operator command; a refused operation exits with its error
    and hint (`_fail`)."""
    async with servers(Settings.from_env(), redis=False) as settings:
        await db.migrate(settings.database)
        pool = await db.create_pool(settings.database)
        try:
            yield settings, pool
        except ConvertdError as err:
            _fail(err)
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
        if args.account is None:
            created = await keys_service.create_account_with_key(
                pool, args.name, plan=args.plan, spec=spec, server_secret=settings.secret
            )
        else:
            created = await keys_service.create_key(pool, args.account, spec, server_secret=settings.secret)
        plan = (await get_account(pool, created.key.account_id)).plan.name
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
        key = await revoke_key(pool, None, args.id)
    print(f"revoked key {key.id} ({key.name}); it is refused from now on")


async def keys_rotate(args: argparse.Namespace) -> None:
    from app.services.keys import rotate_secret

    async with _pool() as (settings, pool):
        key, secret = await rotate_secret(pool, None, args.id, args.secret, settings.secret)
    if args.json:
        print(json.dumps({**key.public(), "rotated": args.secret, "secret": secret}))
        return
    what = "JWT signing secret" if args.secret == "jwt" else "webhook secret"
    print(f"new {what} for key {key.id} ({key.name}), shown only this once:\n\n  {secret}\n")
    print("The old one no longer works; the key itself is unchanged.")


async def keys_rename(args: argparse.Namespace) -> None:
    from app.services.keys import update_key

    async with _pool() as (_, pool):
        key = await update_key(pool, None, args.id, name=args.name)
    print(f"key {key.id} is now named '{key.name}'")


async def keys_jwt(args: argparse.Namespace) -> None:
    from app.services.tokens import mint_for_key

    async with _pool() as (settings, pool):
        minted = await mint_for_key(pool, settings.secret, args.id, args.ttl)
    if args.json:
        print(
            json.dumps(
                {"token": minted.token, "kid": str(minted.kid), "expires_at": minted.expires_at.isoformat()}
            )
        )
    else:
        print(minted.token)


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
        if getattr(args, name) is not NOT_GIVEN
    }
    async with _pool() as (_, pool):
        plan = await set_plan(pool, args.name, **given)
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
        token = await issue_master_token(pool, args.account)
    if args.json:
        print(json.dumps({"account_id": args.account, "master_token": token}))
    else:
        print(f"Master token for account {args.account} (any previous one no longer works):\n\n  {token}\n")
        print("It is shown only this once; store it now. It is for administration only.")

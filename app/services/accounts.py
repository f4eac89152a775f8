"""Account administration (master token): account information, consumption, the master token."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import TYPE_CHECKING

from app.auth import crypto
from app.errors import not_found
from app.models import ApiKey, Plan
from app.services import quota as quota_service
from app.services.credentials import ACCOUNTS_JOIN_PLANS, PLAN_COLUMNS

if TYPE_CHECKING:
    import asyncpg

    from app.auth.principal import Principal
    from app.runtime import Runtime


@dataclasses.dataclass(frozen=True)
class Account:
    id: int
    name: str
    plan: Plan
    active: bool
    conversions_used: int
    master_token_prefix: str | None
    master_token_at: datetime | None
    created_at: datetime

    @property
    def conversions_remaining(self) -> int | None:
        limit = self.plan.conversions
        return None if limit is None else max(limit - self.conversions_used, 0)


@dataclasses.dataclass(frozen=True)
class Consumption:
    account: Account
    rate_limits: quota_service.RateLimits
    keys: list[ApiKey]  # each with its usage_count, conversions_used and conversion_limit


async def get_account(pool: asyncpg.Pool, account_id: int) -> Account:
    row = await pool.fetchrow(
        f"SELECT a.*, {PLAN_COLUMNS} FROM {ACCOUNTS_JOIN_PLANS} WHERE a.id = $1", account_id
    )
    if row is None:
        raise not_found("Account")
    plan = Plan.from_row(row, "plan_name")
    return Account(
        id=row["id"],
        name=row["name"],
        plan=plan,
        active=row["active"],
        conversions_used=row["conversions_used"],
        master_token_prefix=row["master_token_prefix"],
        master_token_at=row["master_token_at"],
        created_at=row["created_at"],
    )


async def account(rt: Runtime, principal: Principal) -> Account:
    return await get_account(rt.pool, principal.account_id)


async def consumption(rt: Runtime, principal: Principal) -> Consumption:
    await rt.key_calls.flush()  # each key's calls so far (counted in batches)
    rows = await rt.pool.fetch(
        "SELECT * FROM api_keys WHERE account_id = $1 ORDER BY id", principal.account_id
    )
    return Consumption(
        account=await get_account(rt.pool, principal.account_id),
        rate_limits=await quota_service.quota(rt, principal),
        keys=[ApiKey.from_row(r) for r in rows],
    )


async def issue_master_token(pool: asyncpg.Pool, account_id: int) -> str:
    """A new master token for the account; the previous one stops working with this statement."""
    token = crypto.generate_master_token()
    updated = await pool.fetchval(
        "UPDATE accounts SET master_token_hash = $2, master_token_prefix = $3, master_token_at = now()"
        " WHERE id = $1 RETURNING id",
        account_id,
        crypto.digest(token),
        crypto.prefix(token),
    )
    if updated is None:
        raise not_found("Account")
    return token


async def refresh_master_token(rt: Runtime, principal: Principal) -> str:
    return await issue_master_token(rt.pool, principal.account_id)

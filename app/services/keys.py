"""Accounts and API keys."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from app.auth import keys
from app.errors import ConvertdError, ErrorCode
from app.models import ApiKey

if TYPE_CHECKING:
    import asyncpg

    from app.auth.principal import Principal

DEFAULT_PLAN = "pro"  # self-hosted: the operator's own keys are unlimited unless told otherwise


@dataclasses.dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    secret: str  # the key itself, shown once


async def create_account_with_key(
    pool: asyncpg.Pool, name: str, *, plan: str = DEFAULT_PLAN, environment: str = "live"
) -> CreatedKey:
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT 1 FROM plans WHERE name = $1", plan):
            names = [r["name"] for r in await conn.fetch("SELECT name FROM plans ORDER BY name")]
            raise ConvertdError(
                ErrorCode.BAD_REQUEST, f"Unknown plan '{plan}'.", f"Plans: {', '.join(names)}."
            )
        account_id = await conn.fetchval(
            "INSERT INTO accounts (name, plan) VALUES ($1, $2) RETURNING id", name, plan
        )
        return await _insert_key(conn, account_id, name, environment)


async def _insert_key(conn: asyncpg.Connection, account_id: int, name: str, environment: str) -> CreatedKey:
    secret = keys.generate(environment)
    row = await conn.fetchrow(
        "INSERT INTO api_keys (account_id, name, prefix, key_hash, environment)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING *",
        account_id,
        name,
        keys.prefix(secret),
        keys.digest(secret),
        environment,
    )
    return CreatedKey(ApiKey.from_row(row), secret)


def current_key(principal: Principal) -> ApiKey:
    if principal.key is None:
        raise ConvertdError(
            ErrorCode.BAD_REQUEST,
            "This credential is not an API key.",
            "Call this with an API key.",
        )
    return principal.key

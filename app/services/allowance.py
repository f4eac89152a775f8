"""The conversion allowance: the plan's conversions per account and a key's own limit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.db import Conn
from app.errors import ConvertdError, ErrorCode

if TYPE_CHECKING:
    import asyncpg

    from app.auth.principal import Principal


async def spend(pool: asyncpg.Pool, principal: Principal) -> None:
    """Take one conversion from the account (and the key), atomically, or refuse with 403."""
    async with pool.acquire() as conn, conn.transaction():
        taken = await conn.fetchval(
            "UPDATE accounts a SET conversions_used = a.conversions_used + 1 FROM plans p"
            " WHERE a.id = $1 AND p.name = a.plan"
            " AND (p.conversions IS NULL OR a.conversions_used < p.conversions) RETURNING a.id",
            principal.account_id,
        )
        if taken is None:
            raise ConvertdError(
                ErrorCode.QUOTA_EXCEEDED,
                "No conversions remaining. Upgrade your plan or purchase more conversions.",
                f"The {principal.plan.name} plan allows {principal.plan.conversions} conversions; "
                "ask the operator for a larger plan.",
            )
        if principal.key is None:
            return
        taken = await conn.fetchval(
            "UPDATE api_keys SET conversions_used = conversions_used + 1 WHERE id = $1"
            " AND (conversion_limit IS NULL OR conversions_used < conversion_limit) RETURNING id",
            principal.key.id,
        )
        if taken is None:  # the account's conversion above is rolled back with this
            raise ConvertdError(
                ErrorCode.QUOTA_EXCEEDED,
                "No conversions remaining on this key.",
                f"The key's own limit is {principal.key.conversion_limit} conversions; raise it "
                "(updateKey) or use another key.",
            )


async def refund(conn: Conn, account_id: int, key_id: int | None) -> None:
    """Give back the conversion of a job that failed: only finished work is charged.

    Runs on the caller's connection, inside the transaction that ended the job, so a job
    is refunded exactly when it is failed."""
    await conn.execute(
        "UPDATE accounts SET conversions_used = greatest(conversions_used - 1, 0) WHERE id = $1",
        account_id,
    )
    if key_id is not None:
        await conn.execute(
            "UPDATE api_keys SET conversions_used = greatest(conversions_used - 1, 0) WHERE id = $1",
            key_id,
        )

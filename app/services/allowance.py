"""The conversion allowance: the plan's conversions per account and a key's own limit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.db import Conn
from app.errors import ConvertdError, ErrorCode

if TYPE_CHECKING:
    import asyncpg

    from app.auth.principal import Principal


async def spend(pool: asyncpg.Pool, principal: Principal) -> None:
    """Take one conversion from the account (and the key), atomically, or refuse with 403.

    One round trip: the database function (migration 010) takes both or neither."""
    spent = await pool.fetchval(
        "SELECT convertd_spend($1, $2)", principal.account_id, principal.key.id if principal.key else None
    )
    if spent == "account":
        raise ConvertdError(
            ErrorCode.QUOTA_EXCEEDED,
            "No conversions remaining. Upgrade your plan or purchase more conversions.",
            f"The {principal.plan.name} plan allows {principal.plan.conversions} conversions; "
            "ask the operator for a larger plan.",
        )
    if spent == "key":
        assert principal.key is not None
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

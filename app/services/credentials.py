"""What authentication reads and spends: a key, an access token or a master token's account,
each with its account and plan. app/auth/authenticate.py decides; this module holds the SQL.

The column list of "an account with its plan" is written once here (ACCOUNT_WITH_PLAN);
services/accounts.py reads accounts through it too.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from app.models import ApiKey, Plan

if TYPE_CHECKING:
    from app.db import Executor

# an account (alias a) joined to its plan (alias p): every column Principal and Account need
PLAN_COLUMNS = (
    "p.name AS plan_name, p.api_access, p.calls_per_day, p.calls_per_minute, p.max_file_size,"
    " p.conversions, p.retention, p.storage_quota, p.max_pending, p.max_running"
)
ACCOUNT_WITH_PLAN = f"a.name AS account_name, a.active, {PLAN_COLUMNS}"
ACCOUNTS_JOIN_PLANS = "accounts a JOIN plans p ON p.name = a.plan"

_KEY_SELECT = (
    f"SELECT k.*, {ACCOUNT_WITH_PLAN}"
    " FROM api_keys k JOIN accounts a ON a.id = k.account_id JOIN plans p ON p.name = a.plan"
)


@dataclasses.dataclass(frozen=True)
class KeyHolder:
    """A key with the account that holds it and the account's plan, as they are now."""

    key: ApiKey
    key_hash: bytes
    account_name: str
    account_active: bool
    plan: Plan

    @classmethod
    def from_row(cls, row: Any) -> KeyHolder:
        return cls(
            key=ApiKey.from_row(row),
            key_hash=row["key_hash"],
            account_name=row["account_name"],
            account_active=row["active"],
            plan=Plan.from_row(row, "plan_name"),
        )


@dataclasses.dataclass(frozen=True)
class AccessToken:
    id: int
    requests_left: int
    valid_until: datetime
    expired: bool


@dataclasses.dataclass(frozen=True)
class MasterAccount:
    """The account a master token belongs to, with its plan."""

    account_id: int
    account_name: str
    active: bool
    plan: Plan


async def _holder(db: Executor, where: str, value: object) -> KeyHolder | None:
    row = await db.fetchrow(f"{_KEY_SELECT} {where}", value)
    return None if row is None else KeyHolder.from_row(row)


async def key_by_digest(db: Executor, digest: bytes) -> KeyHolder | None:
    """The key whose secret hashes to `digest` (an API key sent as is)."""
    return await _holder(db, "WHERE k.key_hash = $1", digest)


async def key_by_kid(db: Executor, kid: uuid.UUID | str) -> KeyHolder | None:
    """The key a JWT names in its `kid` header."""
    return await _holder(db, "WHERE k.kid = $1", kid)


async def key_of_access_token(db: Executor, token_id: int) -> KeyHolder | None:
    """The key an access token was created from."""
    return await _holder(db, "JOIN access_tokens t ON t.api_key_id = k.id WHERE t.id = $1", token_id)


async def access_token(db: Executor, digest: bytes) -> AccessToken | None:
    row = await db.fetchrow(
        "SELECT id, requests_left, valid_until, valid_until <= now() AS expired"
        " FROM access_tokens WHERE token_hash = $1",
        digest,
    )
    return None if row is None else AccessToken(**dict(row))


async def master_account(db: Executor, digest: bytes) -> MasterAccount | None:
    """The account whose master token hashes to `digest`."""
    row = await db.fetchrow(
        f"SELECT a.id AS account_id, {ACCOUNT_WITH_PLAN} FROM {ACCOUNTS_JOIN_PLANS}"
        " WHERE a.master_token_hash = $1",
        digest,
    )
    if row is None:
        return None
    return MasterAccount(
        row["account_id"], row["account_name"], row["active"], Plan.from_row(row, "plan_name")
    )


async def spend_token_request(db: Executor, token_id: int) -> int | None:
    """One request of an access token spent: the requests left, or None when it had none
    left or has expired (the check and the spending are one statement)."""
    left: int | None = await db.fetchval(
        "UPDATE access_tokens SET requests_left = requests_left - 1"
        " WHERE id = $1 AND requests_left > 0 AND valid_until > now() RETURNING requests_left",
        token_id,
    )
    return left


async def key_now(db: Executor, key_id: int) -> KeyHolder | None:
    """The key with its account and plan as they are now (a read: the call is counted in
    app/services/key_calls.py); None when the key is gone (deleted with its account)."""
    return await _holder(db, "WHERE k.id = $1", key_id)

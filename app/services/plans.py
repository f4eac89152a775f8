"""Plans, configured by the operator: API access, rate limits, file size, conversion allowance,
and how many jobs of one account may run at once."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from app.errors import ConvertdError, ErrorCode
from app.models import Plan

if TYPE_CHECKING:
    import asyncpg

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_LIMITS = ("calls_per_day", "calls_per_minute", "max_file_size", "conversions", "max_running")
_POSITIVE = ("max_file_size", "max_running")  # 0 would refuse every file, run no job
UNSET: Any = object()


def _plan(row: Any) -> Plan:
    return Plan.from_row(row, "name")


async def list_plans(pool: asyncpg.Pool) -> list[Plan]:
    return [_plan(r) for r in await pool.fetch("SELECT * FROM plans ORDER BY created_at, name")]


async def set_plan(
    pool: asyncpg.Pool,
    name: str,
    *,
    api_access: bool = UNSET,
    calls_per_day: int | None = UNSET,
    calls_per_minute: int | None = UNSET,
    max_file_size: int | None = UNSET,
    conversions: int | None = UNSET,
    max_running: int | None = UNSET,
) -> Plan:
    """Create the plan or change the given settings of it; None means unlimited."""
    name = name.strip().lower()
    if not _NAME.match(name):
        raise ConvertdError(
            ErrorCode.BAD_REQUEST, f"'{name}' is not a plan name.", "Use lower-case letters, digits, - and _."
        )
    values = {
        "api_access": api_access,
        "calls_per_day": calls_per_day,
        "calls_per_minute": calls_per_minute,
        "max_file_size": max_file_size,
        "conversions": conversions,
        "max_running": max_running,
    }
    given = {k: v for k, v in values.items() if v is not UNSET}
    for field in _LIMITS:
        value = given.get(field)
        if value is not None and (value < 0 or (field in _POSITIVE and value == 0)):
            raise ConvertdError(
                ErrorCode.BAD_REQUEST,
                f"{field} must be {'positive' if field in _POSITIVE else '0 or more'}.",
                "Give a number, or 'unlimited'.",
                field=field,
            )
    columns = ", ".join(given)
    placeholders = ", ".join(f"${i}" for i in range(2, len(given) + 2))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in given)
    row = await pool.fetchrow(
        f"INSERT INTO plans (name{', ' + columns if given else ''})"
        f" VALUES ($1{', ' + placeholders if given else ''})"
        f" ON CONFLICT (name) DO UPDATE SET {updates + ', ' if given else ''}updated_at = now()"
        " RETURNING *",
        name,
        *given.values(),
    )
    return _plan(row)

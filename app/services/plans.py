"""Plans, configured by the operator: API access, rate limits, file size, conversion allowance."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from app.errors import ConvertdError, ErrorCode
from app.models import Plan

if TYPE_CHECKING:
    import asyncpg

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_LIMITS = (
    "calls_per_day", "calls_per_minute", "max_file_size", "conversions",
    "retention", "storage_quota", "max_pending",
)  # fmt: skip
_POSITIVE = ("max_file_size", "retention")  # 0 would mean nothing at all, not a limit
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d+)\s*([smhdw]?)$")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3, "t": 1024**4,
               "tb": 1024**4, "tib": 1024**4}  # fmt: skip
_SIZE = re.compile(r"^(\d+)\s*([a-z]*)$")
UNSET: Any = object()


def parse_duration(text: str) -> int:
    """'90s', '30m', '24h', '7d', '2w' or plain seconds, as seconds."""
    found = _DURATION.match(text.strip().lower())
    if not found:
        raise ValueError(f"'{text}' is not a duration (e.g. 90s, 30m, 24h, 7d)")
    return int(found[1]) * _UNITS[found[2] or "s"]


def parse_size(text: str) -> int:
    """'500MB', '2GiB', '1g' or plain bytes, as bytes (units are powers of 1024)."""
    found = _SIZE.match(text.strip().lower())
    if not found or found[2] not in _SIZE_UNITS:
        raise ValueError(f"'{text}' is not a size (e.g. 500MB, 2GB, or bytes)")
    return int(found[1]) * _SIZE_UNITS[found[2]]


def human_duration(seconds: int | None) -> str:
    if seconds is None:
        return "forever"
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


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
    retention: int | None = UNSET,
    storage_quota: int | None = UNSET,
    max_pending: int | None = UNSET,
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
        "retention": retention,
        "storage_quota": storage_quota,
        "max_pending": max_pending,
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

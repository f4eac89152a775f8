"""What an account did: statistics per day and per conversion type, and the request log."""

from __future__ import annotations

import base64
import dataclasses
import logging
from datetime import date, datetime
from typing import TYPE_CHECKING

from app.errors import ConvertdError, ErrorCode

if TYPE_CHECKING:
    import asyncpg

    from app.auth.principal import Principal
    from app.auth.request import Trace
    from app.runtime import Runtime

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DayStat:
    day: date
    requests: int
    refused: int  # answered with a 4xx or 5xx
    conversions: int
    finished: int
    failed: int


@dataclasses.dataclass(frozen=True)
class ConversionStat:
    filetype: str
    input_format: str
    output_format: str
    conversions: int
    finished: int
    failed: int


@dataclasses.dataclass(frozen=True)
class Statistics:
    since: date
    days: list[DayStat]  # newest first, days with activity only
    conversions: list[ConversionStat]  # per conversion type over the same days, most used first


@dataclasses.dataclass(frozen=True)
class LogEntry:
    id: int
    at: datetime
    transport: str
    route: str
    status: int
    error_code: str | None
    api_key_id: int | None
    credential: str
    client_ip: str | None


@dataclasses.dataclass(frozen=True)
class LogPage:
    entries: list[LogEntry]
    next_cursor: str | None


async def record(
    pool: asyncpg.Pool, trace: Trace, *, transport: str, route: str, status: int, error_code: str | None
) -> None:
    """One line of the request log; a failure to write it never fails the request."""
    if trace.account_id is None or trace.credential is None:
        return
    try:
        await pool.execute(
            "INSERT INTO request_log (account_id, transport, route, status, error_code, api_key_id,"
            " credential, client_ip) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            trace.account_id,
            transport,
            route[:300],
            status,
            error_code,
            trace.api_key_id,
            trace.credential,
            trace.client_ip,
        )
    except Exception:
        log.exception("could not write the request log")


async def statistics(rt: Runtime, principal: Principal, days: int = 30) -> Statistics:
    if not 1 <= days <= 366:
        raise ConvertdError(
            ErrorCode.BAD_REQUEST, "'days' must be from 1 to 366.", "e.g. days=30", field="days"
        )
    since = await rt.pool.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date - $1::int + 1", days)
    day_rows = await rt.pool.fetch(
        """
        WITH r AS (
            SELECT (at AT TIME ZONE 'UTC')::date AS day, count(*) AS requests,
                   count(*) FILTER (WHERE status >= 400) AS refused
            FROM request_log WHERE account_id = $1 AND at >= $2::date GROUP BY 1),
        j AS (
            SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS conversions,
                   count(*) FILTER (WHERE status = 'finished') AS finished,
                   count(*) FILTER (WHERE status = 'failed') AS failed
            FROM jobs WHERE account_id = $1 AND created_at >= $2::date GROUP BY 1)
        SELECT coalesce(r.day, j.day) AS day, coalesce(requests, 0) AS requests,
               coalesce(refused, 0) AS refused, coalesce(conversions, 0) AS conversions,
               coalesce(finished, 0) AS finished, coalesce(failed, 0) AS failed
        FROM r FULL JOIN j ON j.day = r.day ORDER BY 1 DESC
        """,
        principal.account_id,
        since,
    )
    type_rows = await rt.pool.fetch(
        "SELECT filetype, input_format, output_format, count(*) AS conversions,"
        " count(*) FILTER (WHERE status = 'finished') AS finished,"
        " count(*) FILTER (WHERE status = 'failed') AS failed"
        " FROM jobs WHERE account_id = $1 AND created_at >= $2::date"
        " GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3",
        principal.account_id,
        since,
    )
    return Statistics(
        since=since,
        days=[DayStat(**dict(r)) for r in day_rows],
        conversions=[ConversionStat(**dict(r)) for r in type_rows],
    )


def _cursor(entry: LogEntry) -> str:
    return base64.urlsafe_b64encode(str(entry.id).encode()).decode()


def _after(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode())
    except ValueError as exc:
        raise ConvertdError(
            ErrorCode.BAD_REQUEST,
            "The cursor is not valid.",
            "Pass a cursor as a page returned it.",
            field="after",
        ) from exc


async def request_log(
    rt: Runtime, principal: Principal, *, first: int = 50, after: str | None = None
) -> LogPage:
    """The account's requests, newest first."""
    if not 1 <= first <= 500:
        raise ConvertdError(ErrorCode.BAD_REQUEST, "'first' must be from 1 to 500.", "Page with 'after'.")
    rows = await rt.pool.fetch(
        "SELECT id, at, transport, route, status, error_code, api_key_id, credential, client_ip"
        " FROM request_log WHERE account_id = $1 AND ($2::bigint IS NULL OR id < $2)"
        " ORDER BY id DESC LIMIT $3",
        principal.account_id,
        _after(after),
        first + 1,
    )
    entries = [LogEntry(**dict(r)) for r in rows[:first]]
    return LogPage(entries, _cursor(entries[-1]) if len(rows) > first else None)

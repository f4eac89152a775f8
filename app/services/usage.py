"""What an account did: statistics per day and per conversion type, and the request log."""

from __future__ import annotations

import base64
import dataclasses
import logging
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from app.errors import ConvertdError, ErrorCode
from app.services.batching import Batcher

if TYPE_CHECKING:
    import asyncpg

    from app.auth.principal import Principal
    from app.auth.request import Trace
    from app.runtime import Runtime

log = logging.getLogger(__name__)
REQUEST_LOG_PAGE = 50  # lines per page of the request log unless the caller says `first`


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


class RequestLog(Batcher):
    """The request log, written in batches: one round trip per `INTERVAL` at most instead of
    one per request. Lines wait at most that long in memory; readers of this process flush
    first, so an account always sees its own calls."""

    BATCH = 1000  # lines that make a write start at once

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__()
        self.pool = pool
        self.lines: list[tuple[object, ...]] = []

    def record(
        self, trace: Trace, *, transport: str, route: str, status: int, error_code: str | None
    ) -> None:
        if trace.account_id is None or trace.credential is None:
            return
        self.lines.append(
            (
                trace.account_id, datetime.now(UTC), transport, route[:300], status, error_code,
                trace.api_key_id, trace.credential, trace.client_ip,
            )
        )  # fmt: skip
        self._recorded(due=len(self.lines) >= self.BATCH)

    async def _write(self) -> None:
        """Write what waits; a failure to write it never fails a request (logged, dropped)."""
        lines, self.lines = self.lines, []
        if not lines:
            return
        try:
            await self.pool.execute(_INSERT_LINES, *(list(column) for column in zip(*lines, strict=True)))
        except Exception:
            log.exception("could not write %d lines of the request log", len(lines))


# an account or key deleted meanwhile must not make the whole batch fail
_INSERT_LINES = """
INSERT INTO request_log (account_id, at, transport, route, status, error_code, api_key_id,
                         credential, client_ip)
SELECT l.account_id, l.at, l.transport, l.route, l.status, l.error_code,
       (SELECT k.id FROM api_keys k WHERE k.id = l.api_key_id), l.credential, l.client_ip
FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::int[], $6::text[],
            $7::bigint[], $8::text[], $9::text[])
     AS l(account_id, at, transport, route, status, error_code, api_key_id, credential, client_ip)
WHERE EXISTS (SELECT 1 FROM accounts a WHERE a.id = l.account_id)
"""


async def statistics(rt: Runtime, principal: Principal, days: int = 30) -> Statistics:
    if not _whole(days) or not 1 <= days <= 366:  # the REST layer passes on what is not a number
        raise ConvertdError(
            ErrorCode.BAD_REQUEST, "'days' must be from 1 to 366.", "e.g. days=30", field="days"
        )
    await rt.request_log.flush()
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
    rt: Runtime, principal: Principal, *, first: int = REQUEST_LOG_PAGE, after: str | None = None
) -> LogPage:
    """The account's requests, newest first."""
    if not _whole(first) or not 1 <= first <= 500:
        raise ConvertdError(ErrorCode.BAD_REQUEST, "'first' must be from 1 to 500.", "Page with 'after'.")
    await rt.request_log.flush()
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


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

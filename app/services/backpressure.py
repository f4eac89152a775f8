"""Backpressure: a flood of conversions is refused instead of growing the queue without bound.

Per account, the plan's `max_pending` caps jobs waiting for a worker (429 with Retry-After);
for the whole deployment, CONVERTD_MAX_QUEUE_DEPTH caps the queue (503 with Retry-After).

The account's cap is exact under concurrency: `admission` counts the waiting jobs and inserts
the new one in one transaction holding a per-account advisory lock, on one connection (a
waiter never needs a second connection, so waiters cannot starve the holder). `admit` checks
both caps first without the lock, so the usual refusal costs nothing; only requests that pass
it together meet again at the lock, and one refused there is refunded and its fresh uploads
deleted. The global cap is read without a lock: it guards the service, not an account's due,
and may be passed by the requests in flight at the instant it is reached.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from app import metrics
from app.db import Conn
from app.errors import ConvertdError, ErrorCode
from app.services import allowance

if TYPE_CHECKING:
    from app.auth.principal import Principal
    from app.models import Upload
    from app.runtime import Runtime

PENDING_RETRY_AFTER = 10  # seconds: a few jobs of the account will have started by then
QUEUE_RETRY_AFTER = 30  # seconds: the whole queue has to drain a little
_LOCK_CLASS = 0x6F707331  # advisory lock namespace of admissions ("ops1"); the key is the account
_COUNT = "SELECT count(*) FROM jobs WHERE account_id = $1 AND status = 'pending'"


def _too_many(principal: Principal, pending: int, limit: int) -> ConvertdError:
    metrics.REFUSED.labels("pending").inc()
    return ConvertdError(
        ErrorCode.TOO_MANY_PENDING,
        f"The account has {pending:,} jobs waiting; the {principal.plan.name} plan allows "
        f"{limit:,} at a time.",
        hint=f"Wait for some to start (jobUpdates, /v1/events) or retry in {PENDING_RETRY_AFTER} "
        "seconds (Retry-After); cancel jobs you no longer need.",
        headers={"Retry-After": str(PENDING_RETRY_AFTER)},
    )


async def admit(rt: Runtime, principal: Principal) -> None:
    """Refuse a new conversion while the queue or the account's backlog is full (no lock)."""
    cap = rt.settings.max_queue_depth
    if cap > 0:
        depth = await rt.queue.count("queued")
        if depth >= cap:
            metrics.REFUSED.labels("queue").inc()
            raise ConvertdError(
                ErrorCode.OVERLOADED,
                f"The service is busy: {depth:,} jobs are waiting for a worker.",
                hint=f"Try again in {QUEUE_RETRY_AFTER} seconds (Retry-After).",
                headers={"Retry-After": str(QUEUE_RETRY_AFTER)},
            )
    limit = principal.plan.max_pending
    if limit is not None:
        pending = await rt.pool.fetchval(_COUNT, principal.account_id)
        if pending >= limit:
            raise _too_many(principal, pending, limit)


@contextlib.asynccontextmanager
async def admission(
    rt: Runtime, principal: Principal, fresh_uploads: Sequence[Upload]
) -> AsyncIterator[Conn]:
    """The connection to insert the job on, with the account's cap held until it commits.

    Refused here (a request that raced others past `admit`), the conversion already charged
    is refunded and the uploads this request stored are deleted, so a refusal costs nothing."""
    limit = principal.plan.max_pending
    async with rt.pool.acquire() as conn:
        if limit is None:
            yield conn
            return
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1::int, ($2::bigint % 2147483647)::int)",
                _LOCK_CLASS,
                principal.account_id,
            )
            pending = await conn.fetchval(_COUNT, principal.account_id)
            if pending < limit:
                yield conn
                return
            refused = _too_many(principal, pending, limit)
        async with conn.transaction():
            await allowance.refund(conn, principal.account_id, principal.key.id if principal.key else None)
            await conn.execute(
                "DELETE FROM uploads WHERE id = ANY($1::bigint[])", [u.id for u in fresh_uploads]
            )
        await rt.storage.files.delete([u.storage_path for u in fresh_uploads])
        raise refused

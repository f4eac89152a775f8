"""Backpressure: a flood of conversions is refused early instead of growing the queue without
bound. Per account, the plan's `max_pending` caps jobs waiting for a worker (429); for the
whole deployment, CONVERTD_MAX_QUEUE_DEPTH caps the queue (503).

Both are read when the request arrives, before anything is charged or stored: requests of
one account that arrive together may pass together, so a cap can be overshot by at most the
requests in flight at that instant (the rate limits bound those).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app import metrics
from app.errors import ConvertdError, ErrorCode

if TYPE_CHECKING:
    from app.auth.principal import Principal
    from app.runtime import Runtime

PENDING_RETRY_AFTER = 10  # seconds: a few jobs of the account will have started by then
QUEUE_RETRY_AFTER = 30  # seconds: the whole queue has to drain a little


async def pending_jobs(rt: Runtime, account_id: int) -> int:
    return await rt.pool.fetchval(
        "SELECT count(*) FROM jobs WHERE account_id = $1 AND status = 'pending'", account_id
    )


async def admit(rt: Runtime, principal: Principal) -> None:
    """Refuse a new conversion while the queue or the account's backlog is full."""
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
    if limit is None:
        return
    pending = await pending_jobs(rt, principal.account_id)
    if pending >= limit:
        metrics.REFUSED.labels("pending").inc()
        raise ConvertdError(
            ErrorCode.TOO_MANY_PENDING,
            f"The account has {pending:,} jobs waiting; the {principal.plan.name} plan allows "
            f"{limit:,} at a time.",
            hint=f"Wait for some to start (jobUpdates, /v1/events) or retry in {PENDING_RETRY_AFTER} "
            "seconds (Retry-After); cancel jobs you no longer need.",
            headers={"Retry-After": str(PENDING_RETRY_AFTER)},
        )

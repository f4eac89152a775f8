"""Bring the queue in line with PostgreSQL, which is the truth about every job.

Two ways a job can be stranded: Redis lost it (flushed, or restarted before it saved) or a
sweep of it was cut short, so no worker will ever take it; or saq gave up on it (its worker
died on every attempt), so it ended in Redis without our code running to record the end.
Workers run this at start and every minute, each on the jobs of its own queue. Fair
dispatch's caps are refreshed from the plans here too.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from saq.job import Status

from app.services.dispatch import FairQueue
from app.services.job_changes import fail
from app.services.jobs import enqueue

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger(__name__)
GRACE_SECONDS = 60  # a job younger than this may still be on its way through Redis


async def reconcile(rt: Runtime) -> list[uuid.UUID]:
    """Re-queue lost jobs, fail abandoned ones; return the ids it touched."""
    rows = await rt.pool.fetch(
        "SELECT j.id, j.attempts, j.account_id, p.max_running FROM jobs j"
        " JOIN accounts a ON a.id = j.account_id JOIN plans p ON p.name = a.plan"
        " WHERE j.status IN ('pending', 'processing')"
        " AND j.updated_at < now() - make_interval(secs => $1) AND j.queue = $2",
        GRACE_SECONDS,
        rt.settings.queue.name,
    )
    touched = []
    for row in rows:
        queued = await rt.queue.job(str(row["id"]))
        if queued is not None and queued.status == Status.ABORTING:
            # swept by a worker that died before it could retry it: saq has let go of it
            # (off its lists; the abort mark expires in seconds), so it counts as lost
            queued = None
        if queued is None and row["attempts"] < rt.settings.queue.retries:
            log.warning("job %s was missing from the queue; queued it again", row["id"])
            await enqueue(rt, row["id"], row["account_id"], row["max_running"])
        elif queued is None or queued.status in (Status.FAILED, Status.ABORTED, Status.COMPLETE):
            log.warning("job %s was abandoned by the queue; marked failed", row["id"])
            await fail(
                rt,
                row["id"],
                "The conversion stopped: the worker running it died on every attempt.",
                "The file may be too demanding for this server; try a smaller one.",
            )
        else:
            continue
        touched.append(row["id"])
    await refresh_dispatch(rt)
    return touched


async def refresh_dispatch(rt: Runtime) -> None:
    """Fair dispatch: plans' caps as they are now, and every waiting account served.

    A cap changed with `convertd plans set` reaches queued jobs here (new jobs carry it at
    once); a worker that died between two of the dispatcher's steps is repaired here too.
    """
    if not isinstance(rt.queue, FairQueue):
        return
    accounts = await rt.queue.waiting_accounts()
    rows = await rt.pool.fetch(
        "SELECT a.id, p.max_running FROM accounts a JOIN plans p ON p.name = a.plan WHERE a.id = ANY($1)",
        accounts,
    )
    await rt.queue.refill({r["id"]: r["max_running"] for r in rows})

"""Writing a job's changes: each one to PostgreSQL (the truth) first, then published for
its subscribers; a job's end also goes to its webhook. A job that has ended never changes
again, and only the write that really ended it as failed refunds its conversion."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from app import events
from app.errors import ConvertdError, ErrorCode
from app.models import Job, JobStatus
from app.services import allowance, webhooks
from app.services.job_reads import current, get

if TYPE_CHECKING:
    from asyncpg import Record

    from app.auth.principal import Principal
    from app.db import Executor
    from app.runtime import Runtime


async def fail(rt: Runtime, job_id: uuid.UUID, message: str, hint: str | None) -> Job:
    """End a job as failed, with a message for its owner, and refund its conversion.

    A job that had already ended (two cancels racing, a cancel racing the worker's finish)
    is returned as it stands and refunds nothing.
    """
    return await _fail(rt, job_id, message, hint) or await current(rt, job_id)


async def _fail(rt: Runtime, job_id: uuid.UUID, message: str, hint: str | None) -> Job | None:
    """The failed job, or None when it had ended already; the refund rides in the
    transaction of the update that really moved the job to failed."""
    async with rt.pool.acquire() as conn, conn.transaction():
        row = await _update(
            conn,
            job_id,
            status=JobStatus.FAILED,
            error=message,
            error_hint=hint,
            finished_at=datetime.now(UTC),
        )
        if row is None:
            return None
        await allowance.refund(conn, row["account_id"], row["api_key_id"])
    return await announce(rt, Job.from_row(row))


async def save_change(rt: Runtime, job_id: uuid.UUID, **fields: Any) -> Job:
    """Write a change to PostgreSQL (the truth), then publish it for subscribers.

    A finished or failed job never changes again: a late write from a worker (a job
    cancelled while it converted) is dropped, and the job is returned as it stands.
    """
    row = await _update(rt.pool, job_id, **fields)
    if row is None:
        return await current(rt, job_id)
    return await announce(rt, Job.from_row(row))


async def _update(conn: Executor, job_id: uuid.UUID, **fields: Any) -> Record | None:
    """The job's row after the change, or None when it had already ended (it is kept as it was)."""
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(fields, start=2))
    return await conn.fetchrow(
        f"UPDATE jobs SET {sets}, version = version + 1, updated_at = now()"
        " WHERE id = $1 AND status NOT IN ('finished', 'failed') RETURNING *",
        job_id,
        *[v.value if isinstance(v, JobStatus) else v for v in fields.values()],
    )


async def announce(rt: Runtime, job: Job) -> Job:
    """Publish a written change for subscribers; a job's end also goes to its webhook."""
    await events.publish(rt.redis, job)
    if job.terminal and job.webhook_url:
        await webhooks.enqueue(rt, job)
    return job


async def cancel(rt: Runtime, principal: Principal, job_id: str) -> Job:
    """Stop a pending or running job of the caller's; it ends failed, its conversion refunded.

    The database decides who wins a race with the worker's finish or another cancel: only
    the call whose update ends the job takes it off the queue, and it alone refunds.
    """
    job = await get(rt, principal, job_id)
    if not job.terminal:
        cancelled = await _fail(
            rt, job.id, "Cancelled by its owner.", "Convert the file again if you need it."
        )
        if cancelled is not None:
            queued = await rt.queue.job(str(job.id))
            if queued is not None:
                # a queued job leaves the queue; a running one is cancelled by its worker,
                # which kills the converter's whole process group
                await rt.queue.abort(queued, error="cancelled by its owner")
            return cancelled
        job = await current(rt, job.id)
    raise ConvertdError(
        ErrorCode.NOT_READY,
        f"The job is already {job.status.value}; there is nothing to cancel.",
        hint="Only pending or processing jobs can be cancelled.",
    )

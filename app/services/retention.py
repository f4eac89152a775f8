"""Bounded storage: files expire after the plan's retention, owners delete jobs at once,
each account's storage is measured and capped, and the request log is trimmed by age.

A job's files are its output and its input uploads. The sweeper (a worker cron job, every
minute) marks ended jobs past their plan's retention expired and deletes their outputs;
uploads past it are deleted unless a waiting or running job still needs them. Rows are
changed and files deleted (in the file store: a directory or an object store) inside one
transaction per batch, so a sweeper that dies half-way, or meets the store out of reach,
leaves rows that the next sweep finds again (deleting a missing file is not an error).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import TYPE_CHECKING

from saq.job import Status

from app import metrics
from app.errors import ConvertdError, ErrorCode, not_found
from app.models import JobStatus
from app.services import job_reads

if TYPE_CHECKING:
    from app.auth.principal import Principal
    from app.runtime import Runtime

log = logging.getLogger(__name__)
BATCH = 500  # rows per transaction of the sweeper
LOG_BATCH = 10_000  # request-log lines per delete


@dataclasses.dataclass(frozen=True)
class Swept:
    jobs_expired: int
    uploads_deleted: int
    request_log_lines: int


@dataclasses.dataclass(frozen=True)
class Deleted:
    job_id: uuid.UUID
    freed_bytes: int


async def delete_job(rt: Runtime, principal: Principal, job_id: str) -> Deleted:
    """Delete one ended job of the caller's and its files at once; it is a 404 afterwards.

    Its input uploads go with it unless another job of the account uses them too."""
    job = await job_reads.get(rt, principal, job_id)
    if not job.terminal:
        raise ConvertdError(
            ErrorCode.NOT_READY,
            f"The job is {job.status.value}; only ended jobs can be deleted.",
            hint="Cancel it first (POST /v1/cancel/{job_id} or cancelJob), then delete it.",
        )
    # a job cancelled while it ran: its worker may still be stopping the converter, and
    # would store an output the delete never sees. A finished job's worker has stored and
    # recorded its output already (the queue only has not marked it complete yet).
    queued = None if job.status is JobStatus.FINISHED else await rt.queue.job(str(job.id))
    if queued is not None and queued.status is Status.ACTIVE:
        raise ConvertdError(
            ErrorCode.NOT_READY,
            "The job's worker is still stopping it.",
            hint="Try again in a few seconds.",
            headers={"Retry-After": "5"},
        )
    async with rt.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "DELETE FROM jobs WHERE id = $1 AND account_id = $2"
            " RETURNING input_uploads, output_path, coalesce(output_size, 0) AS output_size",
            job.id,
            principal.account_id,
        )
        if row is None:  # deleted by a concurrent call
            raise not_found("Job")
        uploads = await conn.fetch(
            "DELETE FROM uploads u WHERE u.id = ANY($1::bigint[]) AND u.account_id = $2"
            " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.input_uploads @> ARRAY[u.id])"
            " RETURNING storage_path, file_size",
            row["input_uploads"],
            principal.account_id,
        )
        paths = [u["storage_path"] for u in uploads]
        if row["output_path"]:
            paths.append(row["output_path"])
        # inside the transaction: a store out of reach rolls the delete back (503, try again)
        await rt.storage.files.delete(paths)
    metrics.SWEPT.labels("job_files").inc(1 if row["output_path"] else 0)
    metrics.SWEPT.labels("uploads").inc(len(uploads))
    freed = (row["output_size"] if row["output_path"] else 0) + sum(u["file_size"] for u in uploads)
    return Deleted(job.id, freed)


_DUE_JOBS = """
WITH due AS (
    SELECT j.id, j.output_path FROM jobs j
    JOIN accounts a ON a.id = j.account_id JOIN plans p ON p.name = a.plan
    WHERE j.expired_at IS NULL AND j.status IN ('finished', 'failed') AND p.retention IS NOT NULL
      AND j.finished_at < now() - make_interval(secs => p.retention)
    ORDER BY j.finished_at LIMIT $1
    FOR UPDATE OF j SKIP LOCKED)
UPDATE jobs SET expired_at = now(), output_path = NULL FROM due WHERE jobs.id = due.id
RETURNING due.output_path
"""

# an upload a waiting or running job still reads is kept until that job ends
_DUE_UPLOADS = """
WITH due AS (
    SELECT u.id FROM uploads u
    JOIN accounts a ON a.id = u.account_id JOIN plans p ON p.name = a.plan
    WHERE p.retention IS NOT NULL AND u.created_at < now() - make_interval(secs => p.retention)
      AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.input_uploads @> ARRAY[u.id]
                      AND j.status IN ('pending', 'processing'))
    ORDER BY u.created_at LIMIT $1
    FOR UPDATE OF u SKIP LOCKED)
DELETE FROM uploads USING due WHERE uploads.id = due.id RETURNING uploads.storage_path
"""

_OLD_LOG_LINES = """
DELETE FROM request_log WHERE id IN (
    SELECT id FROM request_log WHERE at < now() - make_interval(days => $1) LIMIT $2)
"""


async def _in_batches(rt: Runtime, query: str) -> int:
    done = 0
    while True:
        async with rt.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(query, BATCH)
            await rt.storage.files.delete([r[0] for r in rows if r[0]])
        done += len(rows)
        if len(rows) < BATCH:
            return done


async def sweep(rt: Runtime) -> Swept:
    """Expire what is past its plan's retention; trim the request log (CONVERTD_REQUEST_LOG_DAYS)."""
    jobs_expired = await _in_batches(rt, _DUE_JOBS)
    uploads_deleted = await _in_batches(rt, _DUE_UPLOADS)
    lines = 0
    if rt.settings.request_log_days > 0:
        while True:
            status = await rt.pool.execute(_OLD_LOG_LINES, rt.settings.request_log_days, LOG_BATCH)
            deleted = int(status.rsplit(" ", 1)[-1])
            lines += deleted
            if deleted < LOG_BATCH:
                break
    metrics.SWEPT.labels("job_files").inc(jobs_expired)
    metrics.SWEPT.labels("uploads").inc(uploads_deleted)
    metrics.SWEPT.labels("request_log_lines").inc(lines)
    if jobs_expired or uploads_deleted or lines:
        log.info(
            "retention: %d jobs expired, %d uploads deleted, %d request-log lines trimmed",
            jobs_expired, uploads_deleted, lines,
        )  # fmt: skip
    return Swept(jobs_expired, uploads_deleted, lines)

"""Reading jobs for their owners: one job, a page of them, its output, its place in the
queue, and its changes as they happen."""

from __future__ import annotations

import base64
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING

from app.errors import ConvertdError, CredentialCode, ErrorCode, not_found
from app.models import Job, JobStatus
from app.services import storage_use
from app.services.dispatch import FairQueue, Position

if TYPE_CHECKING:
    from app.auth.principal import Principal
    from app.runtime import Runtime

JOBS_PAGE = 20  # jobs per page unless the caller says `first`


@dataclasses.dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None


@dataclasses.dataclass(frozen=True)
class Download:
    key: str  # the output's key in the file store (app/stores/)
    filename: str


def as_uuid(job_id: str | uuid.UUID) -> uuid.UUID | None:
    """The job id as sent, or None when it cannot be one (then no job has it)."""
    if isinstance(job_id, uuid.UUID):
        return job_id
    try:
        return uuid.UUID(job_id)
    except ValueError:
        return None


async def get(rt: Runtime, principal: Principal, job_id: str | uuid.UUID) -> Job:
    """The caller's job; another account's job is as absent as an unknown one."""
    ident = as_uuid(job_id)
    row = ident and await rt.pool.fetchrow(
        "SELECT * FROM jobs WHERE id = $1 AND account_id = $2", ident, principal.account_id
    )
    if not row:
        raise not_found("Job")
    return Job.from_row(row)


async def current(rt: Runtime, job_id: uuid.UUID) -> Job:
    """The job as it stands, whoever owns it (for the service's own bookkeeping)."""
    return Job.from_row(await rt.pool.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id))


async def position(rt: Runtime, job: Job) -> Position | None:
    """Where a pending job waits among its own account's jobs; None when it does not wait
    or the queue cannot tell (plain FIFO dispatch, or a worker is taking it right now)."""
    if job.status is not JobStatus.PENDING or not isinstance(rt.queue, FairQueue):
        return None
    return await rt.queue.position(str(job.id), job.account_id)


def _encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        when, _, ident = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(when), uuid.UUID(ident)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConvertdError(
            ErrorCode.BAD_REQUEST,
            "The cursor is not valid.",
            hint="Pass a cursor exactly as a previous page returned it.",
            field="after",
        ) from exc


async def list_for(
    rt: Runtime, principal: Principal, *, first: int = JOBS_PAGE, after: str | None = None
) -> JobPage:
    """The caller's jobs, newest first, `first` at a time."""
    if not 1 <= first <= 100:
        raise ConvertdError(
            ErrorCode.BAD_REQUEST, "'first' must be from 1 to 100.", "Page through with 'after'."
        )
    if after:
        when, ident = _decode_cursor(after)
        rows = await rt.pool.fetch(
            "SELECT * FROM jobs WHERE account_id = $1 AND (created_at, id) < ($2, $3)"
            " ORDER BY created_at DESC, id DESC LIMIT $4",
            principal.account_id,
            when,
            ident,
            first + 1,
        )
    else:
        rows = await rt.pool.fetch(
            "SELECT * FROM jobs WHERE account_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
            principal.account_id,
            first + 1,
        )
    jobs = [Job.from_row(r) for r in rows[:first]]
    return JobPage(jobs, _encode_cursor(jobs[-1]) if len(rows) > first else None)


async def download(
    rt: Runtime,
    job_id: str,
    *,
    principal: Principal | None = None,
    expires: str | None = None,
    signature: str | None = None,
) -> Download:
    """The finished output, for its owner or for the holder of a valid signed URL."""
    if signature is not None or expires is not None:
        ident = as_uuid(job_id)
        if ident is None or not rt.storage.verify(str(ident), expires or "", signature or ""):
            raise ConvertdError(
                ErrorCode.FORBIDDEN,
                "The download link is invalid or has expired.",
                hint="Get a fresh download_url from GET /v1/status/{job_id} or the job query.",
            )
        row = await rt.pool.fetchrow("SELECT * FROM jobs WHERE id = $1", ident)
        if row is None:
            raise not_found("Job")
        job = Job.from_row(row)
    elif principal is not None:
        job = await get(rt, principal, job_id)
    else:
        raise ConvertdError(
            ErrorCode.UNAUTHENTICATED,
            "No API key was sent.",
            hint="Send your API key, or use the signed download_url from the job status.",
            legacy_code=CredentialCode.MISSING,
        )
    return output_of(job)


def output_of(job: Job) -> Download:
    """The output of a job already read (the caller's own), or why there is none."""
    if job.status is JobStatus.FAILED:
        raise ConvertdError(
            ErrorCode.NOT_READY,
            f"The job failed and has no output: {job.error}",
            hint=job.error_hint or "Fix the input and convert it again.",
        )
    if job.expired_at is not None:
        raise storage_use.expired(job)  # 410: the retention sweeper deleted its files
    if job.status is not JobStatus.FINISHED or not job.output_path:
        raise ConvertdError(
            ErrorCode.NOT_READY,
            f"The job is {job.status.value}; its output is not ready yet.",
            hint="Wait for status 'finished' (subscribe to jobUpdates or poll /v1/status).",
        )
    return Download(job.output_path, job.output_name or "output")


async def watch(rt: Runtime, principal: Principal, job_id: str | uuid.UUID) -> AsyncIterator[Job]:
    """The job as it stands, then each change, ending at a terminal status.

    The listener is registered before the job is read, so a change made in between is
    delivered; changes at or below the version read are dropped as already seen.
    """
    assert rt.hub is not None, "this process does not serve subscriptions"
    ident = as_uuid(job_id)
    if ident is None:
        raise not_found("Job")
    async with rt.hub.listen(ident) as queue:
        job = await get(rt, principal, ident)
        yield job
        while not job.terminal:
            change = await queue.get()
            if change.version > job.version:
                job = change
                yield job

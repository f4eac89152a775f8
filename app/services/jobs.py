"""Creating conversion jobs: a convert request checked (job_requests.py), charged, its
inputs stored, its row inserted and the job queued; with `wait`, answered at its end.

Reading jobs is in job_reads.py, writing their changes in job_changes.py, the worker's
side in processing.py."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from app import logs
from app.models import Job
from app.outages import is_outage
from app.services import allowance, backpressure, job_requests, storage_use, uploads, url_import
from app.services.job_reads import current, watch
from converters.registry import normalize_format

if TYPE_CHECKING:
    from app.auth.principal import Principal
    from app.models import Upload
    from app.runtime import Runtime
    from app.storage import IncomingFile


async def convert(
    rt: Runtime,
    principal: Principal,
    *,
    filetype: str | None,
    output_format: str | None,
    options: object = None,  # checked by job_requests.parse_options
    files: Sequence[IncomingFile] = (),
    file_paths: Sequence[str] = (),
    input_format: str | None = None,
    webhook_url: str | None = None,
    base_url: str | None = None,
    wait: object = None,
    url: str | None = None,
    admitted: bool = False,
) -> Job:
    """Validate the request fully, store its inputs, then queue the job.

    With `wait` (seconds) the job is returned when it ends or when the wait runs out,
    whichever comes first; it is a job like any other either way (quota, history, events).
    With `url` the input is fetched from there first (app/services/url_import.py) and is
    then one more received file, checked and stored like an upload.
    `admitted`: the caller ran `backpressure.admit` for this one job already (REST does,
    before reading the body); the account's cap is still applied exactly at the insert.
    Every refusal comes before anything is charged, stored or queued.
    """
    asked: dict[str, Any] = {"filetype": filetype, "output_format": output_format, "options": options,
                             "files": files, "file_paths": file_paths, "input_format": input_format,
                             "webhook_url": webhook_url, "wait": wait}  # fmt: skip
    if url is not None and url.strip():
        return await _convert_from_url(rt, principal, url, {**asked, "base_url": base_url}, admitted)
    request = await job_requests.check(rt, principal, **asked)
    # bounded queue and storage (429/503, 413): refused before anything is charged or stored
    if not admitted:
        await backpressure.admit(rt, principal)
    await storage_use.check_quota(rt, principal, sum(f.size for f in files))
    # charged once the request is known to be valid, before anything is stored or queued
    await allowance.spend(rt.pool, principal)
    fresh = await _store(rt, principal, files)
    job = await _insert(rt, principal, request, fresh, base_url)
    return await _queue(rt, principal, job, request.wait)


async def _convert_from_url(
    rt: Runtime, principal: Principal, url: str, request: dict[str, Any], admitted: bool
) -> Job:
    """convert() with one more input fetched from `url`; what needs no input is checked
    before anything is downloaded."""
    job_requests.check_before_input(rt, request)
    if not admitted:
        await backpressure.admit(rt, principal)
    await storage_use.check_quota(rt, principal, 0)
    async with url_import.imported(rt, principal, url) as incoming:
        return await convert(
            rt, principal, **{**request, "files": [*request["files"], incoming]}, admitted=True
        )


async def _store(rt: Runtime, principal: Principal, files: Sequence[IncomingFile]) -> list[Upload]:
    """The files received with the request, stored as uploads; uncharged if that fails."""
    if not files:
        return []
    try:
        return await uploads.store(rt, principal, list(files), quota_checked=True)
    except BaseException:
        # the store (or database) failed: the caller gets a 503 and tries again, uncharged
        async with rt.pool.acquire() as refunding, refunding.transaction():
            await allowance.refund(
                refunding, principal.account_id, principal.key.id if principal.key else None
            )
        raise


_INSERT_JOB = (
    "INSERT INTO jobs (account_id, api_key_id, filetype, input_format, output_format,"
    " options, input_uploads, webhook_url, public_base, request_id, queue)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *"
)


async def _insert(
    rt: Runtime,
    principal: Principal,
    request: job_requests.Request,
    fresh: list[Upload],
    base_url: str | None,
) -> Job:
    """The job's row, under the plan's cap on waiting jobs (exact under concurrency:
    backpressure.py, which refunds and deletes `fresh` when it refuses)."""
    async with backpressure.admission(rt, principal, fresh) as conn:
        row = await conn.fetchrow(
            _INSERT_JOB,
            principal.account_id,
            principal.key.id if principal.key else None,
            request.filetype,
            request.inputs[0][0],
            normalize_format(request.output_format),
            request.options,
            [u.id for u in [*request.stored, *fresh]],
            request.webhook_url,
            (rt.settings.public_url or base_url or "").rstrip("/") or None,
            logs.request_id.get(),  # its log lines in the worker carry the request's id
            rt.settings.queue.name,
        )
    return Job.from_row(row)


async def _queue(rt: Runtime, principal: Principal, job: Job, seconds: float) -> Job:
    """Queue the job; with `seconds`, the job once it ended or the wait ran out."""
    async with contextlib.AsyncExitStack() as stack:
        # a synchronous convert hears of its job from before it is queued: no read of the
        # job it has just written, and no event it could miss
        changes = await stack.enter_async_context(rt.hub.listen(job.id)) if seconds and rt.hub else None
        try:
            await enqueue(rt, job.id, principal.account_id, principal.plan.max_running, waited=bool(seconds))
        except Exception as exc:
            if is_outage(exc):
                await _withdraw(rt, job, principal.key.id if principal.key else None)
            raise
        if changes is not None:
            return await _until_ended(rt, changes, job, seconds)
    return await settle(rt, principal, job, seconds) if seconds else job


async def _withdraw(rt: Runtime, job: Job, key_id: int | None) -> None:
    """Undo a job the queue could not take (its server is down): the caller is told 503
    and will try again, so nothing of it may stay, neither the row nor the charge."""
    async with rt.pool.acquire() as conn, conn.transaction():
        gone = await conn.fetchval(
            "DELETE FROM jobs WHERE id = $1 AND status = 'pending' RETURNING id", job.id
        )
        if gone is not None:
            await allowance.refund(conn, job.account_id, key_id)


async def settle(rt: Runtime, principal: Principal, job: Job, seconds: float) -> Job:
    """The job once it has ended, or as it stands when `seconds` have passed."""
    last = job
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for last in watch(rt, principal, job.id):  # noqa: B007 (the last one is kept)
                pass
    return last


async def _until_ended(rt: Runtime, changes: asyncio.Queue[Job], job: Job, seconds: float) -> Job:
    """The job once it has ended, or as it stands when `seconds` have passed (read again
    then: the worker does not announce the start of a job someone waits for)."""
    try:
        async with asyncio.timeout(seconds):
            while not job.terminal:
                change = await changes.get()
                if change.version > job.version:
                    job = change
    except TimeoutError:
        return await current(rt, job.id)
    return job


async def enqueue(
    rt: Runtime, job_id: uuid.UUID, account_id: int, max_running: int | None, *, waited: bool = False
) -> None:
    """Hand a job to the workers, with every queue setting explicit (saq's defaults lose jobs).

    The account is the job's group: workers take groups round-robin, at most `max_running`
    jobs of one at a time (app/services/dispatch.py). `waited`: a synchronous convert waits
    for it, so its start is only written, not announced (app/services/processing.py).
    """
    q = rt.settings.queue
    await rt.queue.enqueue(
        "convert",
        key=str(job_id),
        job_id=str(job_id),
        group_key=str(account_id),
        meta={"max_running": max_running, "waited": waited},
        timeout=q.job_timeout,
        heartbeat=q.heartbeat,
        retries=q.retries,
        retry_delay=q.retry_delay,
        retry_backoff=q.retry_backoff,
    )

"""Conversion jobs: create, read, list and download. The worker side is in processing.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import events, logs
from app.db import Executor
from app.errors import ConvertdError, CredentialCode, ErrorCode, not_found
from app.models import Job, JobStatus
from app.outages import is_outage
from app.services import allowance, backpressure, storage_use, uploads, url_import, webhooks
from app.services.dispatch import FairQueue, Position
from app.services.formats import request_errors
from converters.base import ConversionError
from converters.registry import normalize_format, registry
from converters.sniff import check_declared

if TYPE_CHECKING:
    from asyncpg import Record

    from app.auth.principal import Principal
    from app.runtime import Runtime
    from app.storage import IncomingFile


@dataclasses.dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None


def _required(value: str | None, field: str, hint: str) -> str:
    if not value or not value.strip():
        raise ConvertdError(ErrorCode.BAD_REQUEST, f"'{field}' is required.", hint, field=field)
    return value.strip().lower()


def parse_options(options: object) -> dict[str, Any]:
    """The options as sent (a JSON text from a form, any JSON value from GraphQL) as a dict."""
    if options is None or options == "":
        return {}
    if isinstance(options, str):
        try:
            options = json.loads(options)
        except json.JSONDecodeError as exc:
            raise ConvertdError(
                ErrorCode.INVALID_OPTION,
                f"'options' is not valid JSON: {exc.msg} at character {exc.pos}.",
                hint='Send options as a JSON object, e.g. {"quality": 80}.',
                field="options",
            ) from exc
    if not isinstance(options, Mapping):
        raise ConvertdError(
            ErrorCode.INVALID_OPTION,
            "'options' must be a JSON object.",
            hint='e.g. {"quality": 80}',
            field="options",
        )
    return dict(options)


def _format_of(name: str, extension: str, override: str | None) -> str:
    fmt = normalize_format(override or extension)
    if not fmt:
        raise ConvertdError(
            ErrorCode.BAD_REQUEST,
            f"Cannot tell the format of '{name}': it has no extension.",
            hint="Name the file with its extension (photo.png) or pass input_format.",
            field="input_format",
        )
    return fmt


def _check_content(path: Path, fmt: str) -> None:
    try:
        check_declared(path, fmt)
    except ConversionError as exc:
        raise ConvertdError(ErrorCode.INVALID_FILE, exc.message, exc.hint, field="file") from exc


async def convert(
    rt: Runtime,
    principal: Principal,
    *,
    filetype: str | None,
    output_format: str | None,
    options: object = None,  # checked by parse_options
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

    Long on purpose: it reads top to bottom in the order of the checks, every refusal
    before anything is charged, stored or queued.
    """
    if url is not None and url.strip():
        request = {"filetype": filetype, "output_format": output_format, "options": options, "files": files,
                   "file_paths": file_paths, "input_format": input_format, "webhook_url": webhook_url,
                   "base_url": base_url, "wait": wait}  # fmt: skip
        return await _convert_from_url(rt, principal, url, request, admitted)
    seconds = _wait_seconds(wait)
    webhook_url = webhooks.check_url(webhook_url)
    filetype = _required(filetype, "filetype", f"One of: {', '.join(registry().filetypes)}.")
    output_format = _required(output_format, "output_format", "The target extension, e.g. webp.")
    values = parse_options(options)
    if not files and not file_paths:
        raise ConvertdError(
            ErrorCode.BAD_REQUEST,
            "No input file.",
            hint="Send the file as 'file', pass 'file_path' from an earlier upload, or 'url' to import.",
            field="file",
        )
    uploads.check_size(rt, principal, list(files))
    stored = [await uploads.find(rt, principal, p) for p in file_paths]
    # each input's format, and where to read it: a file just received, or a stored upload's key
    inputs: list[tuple[str, Path | str]] = [
        (_format_of(f.filename, f.extension, input_format), f.path) for f in files
    ] + [(_format_of(u.file_name, u.extension, input_format), u.storage_path) for u in stored]
    values = await _check_conversion(rt, filetype, output_format, inputs, values)

    # bounded queue and storage (429/503, 413): refused before anything is charged or stored
    if not admitted:
        await backpressure.admit(rt, principal)
    await storage_use.check_quota(rt, principal, sum(f.size for f in files))
    # charged once the request is known to be valid, before anything is stored or queued
    await allowance.spend(rt.pool, principal)
    try:
        fresh = await uploads.store(rt, principal, list(files), quota_checked=True) if files else []
    except BaseException:
        # the store (or database) failed: the caller gets a 503 and tries again, uncharged
        async with rt.pool.acquire() as refunding, refunding.transaction():
            await allowance.refund(
                refunding, principal.account_id, principal.key.id if principal.key else None
            )
        raise
    stored += fresh
    # the plan's cap on waiting jobs, exact under concurrency (backpressure.py)
    async with backpressure.admission(rt, principal, fresh) as conn:
        row = await conn.fetchrow(
            _INSERT_JOB,
            principal.account_id,
            principal.key.id if principal.key else None,
            filetype,
            inputs[0][0],
            normalize_format(output_format),
            values,
            [u.id for u in stored],
            webhook_url,
            (rt.settings.public_url or base_url or "").rstrip("/") or None,
            logs.request_id.get(),  # its log lines in the worker carry the request's id
        )
    job = Job.from_row(row)
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


async def _convert_from_url(
    rt: Runtime, principal: Principal, url: str, request: dict[str, Any], admitted: bool
) -> Job:
    """convert() with one more input fetched from `url`; what needs no input is checked
    before anything is downloaded."""
    _wait_seconds(request["wait"])
    webhooks.check_url(request["webhook_url"])
    _required(request["filetype"], "filetype", f"One of: {', '.join(registry().filetypes)}.")
    _required(request["output_format"], "output_format", "The target extension, e.g. webp.")
    parse_options(request["options"])
    if not admitted:
        await backpressure.admit(rt, principal)
    await storage_use.check_quota(rt, principal, 0)
    async with url_import.imported(rt, principal, url) as incoming:
        return await convert(
            rt, principal, **{**request, "files": [*request["files"], incoming]}, admitted=True
        )


_INSERT_JOB = (
    "INSERT INTO jobs (account_id, api_key_id, filetype, input_format, output_format,"
    " options, input_uploads, webhook_url, public_base, request_id)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *"
)


async def _check_conversion(
    rt: Runtime,
    filetype: str,
    output_format: str,
    inputs: list[tuple[str, Path | str]],
    options: dict[str, Any],
) -> dict[str, Any]:
    """Refuse what the converter cannot do with these inputs (formats that do not go
    together, several files for a one-input converter, content that is not its format);
    return the options validated against its schema, defaults filled in. An input is a file
    just received, or a stored upload's key (read through the file store)."""
    with request_errors():
        converter = registry().find(filetype, inputs[0][0], output_format)
        for fmt, _ in inputs[1:]:
            if registry().find(filetype, fmt, output_format) is not converter:
                raise ConvertdError(
                    ErrorCode.UNSUPPORTED_CONVERSION,
                    "These inputs cannot be combined into one output.",
                    hint="Send inputs of formats one converter reads together.",
                )
        values = registry().validate(filetype, inputs[0][0], output_format, options)
    if len(inputs) > 1 and not converter.multi_input:
        raise ConvertdError(
            ErrorCode.BAD_REQUEST,
            f"A {filetype} conversion to {output_format} takes one input file, not {len(inputs)}.",
            hint="Send one file per conversion.",
            field="file",
        )
    if not converter.content_agnostic:
        for fmt, where in inputs:
            if isinstance(where, Path):
                _check_content(where, fmt)
                continue
            async with rt.storage.readable(where) as path:
                _check_content(path, fmt)
    return values


async def _withdraw(rt: Runtime, job: Job, key_id: int | None) -> None:
    """Undo a job the queue could not take (its server is down): the caller is told 503
    and will try again, so nothing of it may stay, neither the row nor the charge."""
    async with rt.pool.acquire() as conn, conn.transaction():
        gone = await conn.fetchval(
            "DELETE FROM jobs WHERE id = $1 AND status = 'pending' RETURNING id", job.id
        )
        if gone is not None:
            await allowance.refund(conn, job.account_id, key_id)


MAX_WAIT = 60
JOBS_PAGE = 20  # jobs per page unless the caller says `first`


def _wait_seconds(wait: object) -> float:
    if wait is None or wait == "":
        return 0.0
    try:
        seconds = float(str(wait))
    except ValueError:
        seconds = -1.0
    if not 1 <= seconds <= MAX_WAIT:
        raise ConvertdError(
            ErrorCode.BAD_REQUEST,
            f"'wait' must be a number of seconds from 1 to {MAX_WAIT}.",
            hint="Leave it out to get the job at once and follow it (events, jobUpdates).",
            field="wait",
        )
    return seconds


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
        return await _current(rt, job.id)
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


async def position(rt: Runtime, job: Job) -> Position | None:
    """Where a pending job waits among its own account's jobs; None when it does not wait
    or the queue cannot tell (plain FIFO dispatch, or a worker is taking it right now)."""
    if job.status is not JobStatus.PENDING or not isinstance(rt.queue, FairQueue):
        return None
    return await rt.queue.position(str(job.id), job.account_id)


def _uuid(job_id: str | uuid.UUID) -> uuid.UUID | None:
    if isinstance(job_id, uuid.UUID):
        return job_id
    try:
        return uuid.UUID(job_id)
    except ValueError:
        return None


async def get(rt: Runtime, principal: Principal, job_id: str | uuid.UUID) -> Job:
    """The caller's job; another account's job is as absent as an unknown one."""
    ident = _uuid(job_id)
    row = ident and await rt.pool.fetchrow(
        "SELECT * FROM jobs WHERE id = $1 AND account_id = $2", ident, principal.account_id
    )
    if not row:
        raise not_found("Job")
    return Job.from_row(row)


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


@dataclasses.dataclass(frozen=True)
class Download:
    key: str  # the output's key in the file store (app/stores/)
    filename: str


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
        ident = _uuid(job_id)
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


async def fail(rt: Runtime, job_id: uuid.UUID, message: str, hint: str | None) -> Job:
    """End a job as failed, with a message for its owner, and refund its conversion.

    A job that had already ended (two cancels racing, a cancel racing the worker's finish)
    is returned as it stands and refunds nothing.
    """
    return await _fail(rt, job_id, message, hint) or await _current(rt, job_id)


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
        return await _current(rt, job_id)
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


async def _current(rt: Runtime, job_id: uuid.UUID) -> Job:
    return Job.from_row(await rt.pool.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id))


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
        job = await _current(rt, job.id)
    raise ConvertdError(
        ErrorCode.NOT_READY,
        f"The job is already {job.status.value}; there is nothing to cancel.",
        hint="Only pending or processing jobs can be cancelled.",
    )


async def watch(rt: Runtime, principal: Principal, job_id: str | uuid.UUID) -> AsyncIterator[Job]:
    """The job as it stands, then each change, ending at a terminal status.

    The listener is registered before the job is read, so a change made in between is
    delivered; changes at or below the version read are dropped as already seen.
    """
    assert rt.hub is not None, "this process does not serve subscriptions"
    ident = _uuid(job_id)
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

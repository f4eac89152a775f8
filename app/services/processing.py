"""The worker's side of a job: run the conversion, record every change, never raise."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from app import metrics
from app.models import Job, JobStatus
from app.outages import is_outage
from app.services.job_changes import announce, fail, save_change
from app.storage import safe_filename
from converters.base import ConversionError, Result
from converters.registry import normalize_format, registry
from converters.sandbox import parent as sandbox
from converters.tools.office import broker as office_broker

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger(__name__)
PROGRESS_STEP = 0.01  # smallest rise worth a database write and an event
PROGRESS_INTERVAL = 0.25  # seconds between progress writes at most


# Taking a job is one round trip: the move to processing (unless it has ended meanwhile)
# and its inputs, in the order they were given.
_START = """
UPDATE jobs SET status = 'processing', progress = 0, attempts = attempts + 1,
       started_at = coalesce(started_at, now()), error = NULL, error_hint = NULL,
       version = version + 1, updated_at = now()
WHERE id = $1 AND status NOT IN ('finished', 'failed')
RETURNING *, (
    SELECT coalesce(json_agg(json_build_object('file_name', u.file_name, 'storage_path', u.storage_path)
                             ORDER BY array_position(jobs.input_uploads, u.id)), '[]')
    FROM uploads u WHERE u.id = ANY(jobs.input_uploads)) AS inputs
"""


def output_name(inputs: list[str], result_path: Path, output_format: str) -> str:
    stem = Path(inputs[0]).name if inputs else "output"
    for ext in (".tar.gz", ".tar.bz2", ".tar.xz"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    else:
        stem = Path(stem).stem
    suffix = output_format if result_path.name.endswith(output_format) else result_path.suffix[1:]
    return safe_filename(f"{stem}.{suffix}", default=f"output.{suffix}")


class JobEnded(Exception):
    """The job ended elsewhere (its owner cancelled it) while it converted."""

    def __init__(self, job: Job) -> None:
        super().__init__(str(job.id))
        self.job = job


async def process(
    rt: Runtime,
    job_id: uuid.UUID,
    touch: Callable[[], Awaitable[None]],
    taken: Callable[[Job], None] | None = None,
    *,
    announce_start: bool = True,
) -> Job:
    """Convert one job. A failure of the conversion is recorded on the job, not raised.

    `touch` keeps the queue's heartbeat alive; it is called while the converter runs even
    when the converter reports no progress, so a long silent step is not taken for death.
    The job's own events are followed meanwhile: when it ends elsewhere (a cancel), the
    converter is stopped at once, without waiting for the queue to pass the abort on.
    `taken` hears of the job as soon as it is marked started (the worker's log context).
    `announce_start`: False for a job a synchronous convert waits for (it only needs the
    end); the start is written to the job's row either way.
    """
    async with _changes(rt, job_id) as changes:
        row = await rt.pool.fetchrow(_START, job_id)
        if row is None:
            row = await rt.pool.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
            if row is None:
                log.warning("job %s vanished before it ran", job_id)
                raise LookupError(job_id)
            # it ended before this attempt: cancelled before a worker took it, or an
            # attempt wrote its end and died before publishing it, so the end is published
            # again (subscribers drop a version they have seen; a webhook is queued once)
            return await announce(rt, Job.from_row(row))
        started = Job.from_row(row)
        if taken is not None:
            taken(started)
        job = await announce(rt, started) if announce_start else started
        try:
            return await _convert(rt, job, row["inputs"], touch, changes)
        except JobEnded as ended:
            return ended.job


async def _convert(
    rt: Runtime,
    job: Job,
    uploads: list[dict[str, str]],
    touch: Callable[[], Awaitable[None]],
    changes: asyncio.Queue[Job] | None,
) -> Job:
    """Run a started job's conversion and record its end: finished, or failed with a
    refund. Only an outage (the job is retried) and a cancel (JobEnded) are raised.

    Long on purpose: the inputs, the workdir and the office door are context managers that
    must all stay open until the output is stored, and the except branches below are the
    one place that decides what a failure means for the job (saq's Worker.process does the
    same in one function).
    """
    job_id = job.id
    on_progress = _progress_saver(rt, job_id)
    beat = asyncio.create_task(_heartbeat(rt, touch))
    try:
        attempt = f"{job_id}-{job.attempts}"
        keys = [u["storage_path"] for u in uploads]
        # inputs in an object store are downloaded to this machine first: the sandbox
        # works on local files only
        async with rt.storage.inputs(attempt, keys) as paths, rt.storage.workdir(attempt) as workdir:
            # LibreOffice work reaches this worker's warm pool through a door bound to the
            # job's account (converters/tools/office/broker.py); a no-op when no pool runs here
            door = (
                office_broker.serve_job(workdir, job.account_id)
                if _uses_office(job)
                else contextlib.nullcontext()
            )
            async with door:
                conversion = sandbox.run(
                    job.filetype,
                    job.input_format,
                    job.output_format,
                    job.options,
                    paths,
                    workdir,
                    on_progress,
                )
                result = await _unless_ended(conversion, changes)
            name = output_name([u["file_name"] for u in uploads], result.path, job.output_format)
            size = result.path.stat().st_size
            relative = await rt.storage.store_output(result.path, job.account_id, str(job_id), name)
            # the end is written and published before the job's directory is cleaned up:
            # whoever waits for the job hears of it that much sooner
            return await save_change(
                rt,
                job_id,
                status=JobStatus.FINISHED,
                progress=1.0,
                output_path=relative,
                output_name=name,
                output_size=size,
                output_items=result.items,
                output_notes=result.notes,
                finished_at=_now(),
            )
    except ConversionError as exc:
        metrics.conversion_failed(exc)  # counts sandbox failures by kind
        return await fail(rt, job_id, exc.message, exc.hint)
    except (asyncio.CancelledError, JobEnded):
        raise
    except Exception as exc:
        if is_outage(exc):
            raise  # not the job's fault: the worker waits for the server, then tries again
        log.exception("job %s failed unexpectedly", job_id)
        return await fail(
            rt,
            job_id,
            "The conversion failed because of an internal error.",
            "Try again; if it keeps failing, report the job id to the operator.",
        )
    finally:
        beat.cancel()


def _progress_saver(rt: Runtime, job_id: uuid.UUID) -> Callable[[float], Awaitable[None]]:
    """The converter's progress, saved at most every PROGRESS_STEP and PROGRESS_INTERVAL.

    The first write waits an interval too: a job done within it (most are) costs no
    progress write, publish or event at all, only its start and its end."""
    last = {"value": 0.0, "at": time.monotonic()}

    async def on_progress(fraction: float) -> None:
        now = time.monotonic()
        if fraction - last["value"] >= PROGRESS_STEP and now - last["at"] >= PROGRESS_INTERVAL:
            last.update(value=fraction, at=now)
            await save_change(rt, job_id, progress=min(max(fraction, 0.0), 0.99))

    return on_progress


async def _heartbeat(rt: Runtime, touch: Callable[[], Awaitable[None]]) -> None:
    """Tell the queue the job is alive, three times per heartbeat period, until cancelled."""
    while True:
        await asyncio.sleep(max(rt.settings.queue.heartbeat / 3, 0.5))
        await touch()


def _uses_office(job: Job) -> bool:
    """Whether the job's converter may need the warm LibreOffice pool (a door costs a
    socket and a thread: other jobs go without)."""
    try:
        formats = normalize_format(job.input_format), normalize_format(job.output_format)
        conv = registry().find(job.filetype, *formats)
    except Exception:  # an unknown pair fails in the sandbox, with its own error
        return False
    return conv.uses_office


@contextlib.asynccontextmanager
async def _changes(rt: Runtime, job_id: uuid.UUID) -> AsyncIterator[asyncio.Queue[Job] | None]:
    """The job's published changes, from before the worker takes it (None: no event hub)."""
    if rt.hub is None:
        yield None
        return
    async with rt.hub.listen(job_id) as queue:
        yield queue


async def _unless_ended(conversion: Awaitable[Result], changes: asyncio.Queue[Job] | None) -> Result:
    """The conversion's result, or JobEnded (the conversion killed) if the job ends first."""
    if changes is None:
        return await conversion

    async def ended() -> Job:
        while not (change := await changes.get()).terminal:
            pass
        return change

    work, watch = asyncio.ensure_future(conversion), asyncio.ensure_future(ended())
    try:
        await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work, watch):
            if not task.done():
                task.cancel()  # cancelling the sandbox kills the converter's process group
        await asyncio.gather(work, watch, return_exceptions=True)
    if watch.done() and not watch.cancelled() and watch.exception() is None:
        raise JobEnded(watch.result())
    return work.result()  # the conversion's result or its error


def _now() -> datetime:
    return datetime.now(UTC)

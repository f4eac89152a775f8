"""The worker's side of a job: run the conversion, record every change, never raise."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from app.models import Job, JobStatus
from app.services.jobs import fail, save_change
from app.storage import safe_filename
from converters import office_broker, sandbox
from converters.base import ConversionError

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger(__name__)
PROGRESS_STEP = 0.01  # smallest rise worth a database write and an event
PROGRESS_INTERVAL = 0.25  # seconds between progress writes at most


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


async def process(rt: Runtime, job_id: uuid.UUID, touch: Callable[[], Awaitable[None]]) -> Job:
    """Convert one job. A failure of the conversion is recorded on the job, not raised.

    `touch` keeps the queue's heartbeat alive; it is called while the converter runs even
    when the converter reports no progress, so a long silent step is not taken for death.
    """
    row = await rt.pool.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    if row is None:
        log.warning("job %s vanished before it ran", job_id)
        raise LookupError(job_id)
    job = Job.from_row(row)
    if job.terminal:
        return job
    job = await save_change(
        rt,
        job_id,
        status=JobStatus.PROCESSING,
        progress=0.0,
        attempts=job.attempts + 1,
        started_at=job.started_at or _now(),
        error=None,
        error_hint=None,
    )
    uploads = await rt.pool.fetch(
        "SELECT file_name, storage_path FROM uploads WHERE id = ANY($1::bigint[])"
        " ORDER BY array_position($1::bigint[], id)",
        job.input_uploads,
    )
    last = {"value": 0.0, "at": 0.0}

    async def on_progress(fraction: float) -> None:
        now = time.monotonic()
        if fraction - last["value"] >= PROGRESS_STEP and now - last["at"] >= PROGRESS_INTERVAL:
            last.update(value=fraction, at=now)
            await save_change(rt, job_id, progress=min(max(fraction, 0.0), 0.99))
        await touch()

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(max(rt.settings.queue.heartbeat / 3, 0.5))
            await touch()

    beat = asyncio.create_task(heartbeat())
    try:
        with rt.storage.workdir(f"{job_id}-{job.attempts}") as workdir:
            # LibreOffice work reaches this worker's warm pool through a door bound to the
            # job's account (converters/office_broker.py); a no-op when no pool runs here
            async with office_broker.serve_job(workdir, job.account_id):
                result = await sandbox.run(
                    job.filetype,
                    job.input_format,
                    job.output_format,
                    job.options,
                    [rt.storage.path(u["storage_path"]) for u in uploads],
                    workdir,
                    on_progress,
                )
            name = output_name([u["file_name"] for u in uploads], result.path, job.output_format)
            size = result.path.stat().st_size
            relative = rt.storage.store_output(result.path, job.account_id, str(job_id), name)
        return await save_change(
            rt,
            job_id,
            status=JobStatus.FINISHED,
            progress=1.0,
            output_path=relative,
            output_name=name,
            output_size=size,
            output_items=result.items,
            finished_at=_now(),
        )
    except ConversionError as exc:
        return await fail(rt, job_id, exc.message, exc.hint)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("job %s failed unexpectedly", job_id)
        return await fail(
            rt,
            job_id,
            "The conversion failed because of an internal error.",
            "Try again; if it keeps failing, report the job id to the operator.",
        )
    finally:
        beat.cancel()


def _now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)

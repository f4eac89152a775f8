"""saq worker wiring: the queue's function calls the processing service."""

from __future__ import annotations

import asyncio
import logging
import uuid

from saq import CronJob, Worker
from saq.types import Context, PartialTimersDict

from app import logs, metrics, outages
from app.models import Job
from app.runtime import Runtime
from app.services import processing, recovery, retention, webhooks
from converters.sandbox import servers
from converters.tools.office import pool as office_pool

log = logging.getLogger(__name__)
job_log = logging.getLogger("convertd.jobs")  # a job's own lines, with its request's id


class WorkerContext(Context, total=False):
    """saq's context for each call, with the runtime `startup` puts in it."""

    runtime: Runtime


async def convert(ctx: WorkerContext, *, job_id: str) -> str:
    rt: Runtime = ctx["runtime"]
    saq_job = ctx["job"]
    try:
        with logs.job_context(job_id, None):

            def taken(job: Job) -> None:
                # the job's log lines carry the id of the request that created it
                # (app/logs.py), read with the job's start rather than by a query of its own
                logs.request_id.set(job.request_id)
                job_log.info("job taken", extra={"attempt": saq_job.attempts})

            waited = bool((saq_job.meta or {}).get("waited"))  # a synchronous convert's job
            job = await processing.process(
                rt, uuid.UUID(job_id), saq_job.update, taken, announce_start=not waited
            )
            logs.request_id.set(job.request_id)  # (also when it ended before it was taken)
            metrics.job_ended(job)
            job_log.info("job %s", job.status.value, extra={"status": job.status.value, "error": job.error})
    except Exception as exc:
        if not outages.is_outage(exc):
            raise
        # PostgreSQL or Redis went away mid-job: the attempt is handed back to the queue
        # (saq retries it) only once both answer again, so an outage shorter than the
        # wait never uses up a job's attempts
        log.warning("job %s: a server is out of reach; retrying once it is back", job_id, exc_info=exc)
        await outages.wait_until_reachable(rt)
        raise
    return job.status.value


async def webhook(ctx: WorkerContext, *, job_id: str) -> str:
    saq_job = ctx["job"]
    last = saq_job.attempts >= saq_job.retries
    return await webhooks.deliver(ctx["runtime"], uuid.UUID(job_id), last_attempt=last)


async def reconcile(ctx: WorkerContext) -> int:
    return len(await recovery.reconcile(ctx["runtime"]))


async def sweep_storage(ctx: WorkerContext) -> int:
    """Retention (app/services/retention.py): expired files and old request-log lines go."""
    swept = await retention.sweep(ctx["runtime"])
    return swept.jobs_expired + swept.uploads_deleted


def build_worker(rt: Runtime) -> Worker[WorkerContext]:
    async def startup(ctx: WorkerContext) -> None:
        ctx["runtime"] = rt
        # warm LibreOffice instances, one per concurrent job unless configured (they start
        # in the background; office jobs wait for the first one ready)
        await asyncio.to_thread(office_pool.start, rt.settings.queue.concurrency)
        # the fork server imports every converter now, not in front of the first job, and
        # says at start which isolation layers this machine lacks
        await servers.prestart()
        try:
            await recovery.reconcile(rt)
        except Exception as exc:
            if not outages.is_outage(exc):
                raise
            log.warning("recovery at start skipped: a server is out of reach (the cron runs it)")
        log.info(
            "worker ready",
            extra={"concurrency": rt.settings.queue.concurrency, "files": rt.storage.files.kind},
        )

    async def shutdown(ctx: WorkerContext) -> None:
        await asyncio.to_thread(office_pool.stop)

    q = rt.settings.queue
    worker: Worker[WorkerContext] = Worker(
        rt.queue,
        functions=[convert, webhook],
        cron_jobs=[
            CronJob(reconcile, cron="* * * * *", timeout=60),
            CronJob(sweep_storage, cron="* * * * *", timeout=600),
        ],
        concurrency=q.concurrency,
        startup=startup,
        shutdown=shutdown,
        timers=PartialTimersDict(sweep=q.sweep_interval),  # type: ignore[typeddict-item]  # saq: rest default
        # SIGTERM: running jobs finish within the drain time; the rest are cancelled, which
        # kills their converters and puts them back on the queue for another worker
        shutdown_grace_period_s=q.drain_seconds,
    )
    worker.SIGNALS = []  # the process owns SIGINT/SIGTERM: it stops the API and servers too
    return worker

"""Prometheus metrics, every name prefixed `convertd_`, served by GET /metrics.

`convertd serve` runs the API and its workers in separate processes, so counts and durations
use prometheus-client's multiprocess mode: `serve` points PROMETHEUS_MULTIPROC_DIR at a folder
of the data directory before anything imports prometheus_client (app/cli/parser.py), every
process (the API and each worker it starts) writes its figures to its own files there, and
/metrics adds them up.
Figures that are a state rather than a count (queue depth, jobs by status, live workers) are
read from Redis and PostgreSQL at scrape time, so they are the deployment's, whoever answers.
Without the variable (tests, one process) the default registry is used as it is.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from app.services import job_rows

if TYPE_CHECKING:
    from app.models import Job
    from app.runtime import Runtime

log = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LIVE_TIMEOUT = 3.0  # seconds the scrape waits for PostgreSQL and Redis before leaving them out

REQUESTS = Counter(
    "convertd_http_requests", "HTTP requests answered, by method, route and status.",
    ["method", "route", "status"],
)  # fmt: skip
JOB_SECONDS = Histogram(
    "convertd_job_duration_seconds",
    "Time from a worker taking a job to its end, by filetype, converter and outcome.",
    ["filetype", "converter", "status"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
SANDBOX_FAILURES = Counter(
    "convertd_sandbox_failures", "Conversions the sandbox ended with an error, by kind "
    "(converter, memory, cpu, timeout, crash, output_size, internal).", ["kind"],
)  # fmt: skip
EVENTS = Counter("convertd_events_published", "Job change events published on Redis.")
WEBHOOKS = Counter(
    "convertd_webhook_deliveries", "Webhook delivery attempts, by outcome "
    "(delivered, retrying, failed, refused).", ["outcome"],
)  # fmt: skip
REFUSED = Counter(
    "convertd_backpressure_refusals", "Conversions refused to keep the queue bounded, by reason "
    "(pending: the account's cap, 429; queue: the global cap, 503).", ["reason"],
)  # fmt: skip
SWEPT = Counter(
    "convertd_retention_deleted", "What the retention sweeper and job deletions removed, by kind "
    "(job_files, uploads, request_log_lines).", ["kind"],
)  # fmt: skip


def job_ended(job: Job) -> None:
    """A job a worker ran has ended (not one that ended before a worker took it)."""
    if not job.terminal or job.started_at is None or job.finished_at is None:
        return
    from converters.registry import registry

    try:
        converter = registry().find(job.filetype, job.input_format, job.output_format).engine
    except Exception:  # a pair this build no longer has
        converter = "unknown"
    seconds = max((job.finished_at - job.started_at).total_seconds(), 0.0)
    JOB_SECONDS.labels(job.filetype, converter, job.status.value).observe(seconds)


def conversion_failed(error: Exception) -> None:
    kind = getattr(error, "kind", None)  # a converters.sandbox.failures.SandboxError
    if kind is not None:
        SANDBOX_FAILURES.labels(kind).inc()


def webhook_outcome(outcome: str) -> None:
    """'delivered', 'refused: ...', 'failed: 404', 'failed: 404; retrying' -> one word."""
    word = "retrying" if outcome.endswith("retrying") else outcome.split(":", 1)[0]
    WEBHOOKS.labels(word).inc()


class _Fixed:
    """A collector of figures already read (collectors are synchronous; our reads are not)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


async def _live(rt: Runtime) -> list[Metric]:
    families: list[Metric] = []
    try:
        async with asyncio.timeout(LIVE_TIMEOUT):
            info = await rt.queue.info()
        depth = GaugeMetricFamily(
            "convertd_queue_depth", "Queue entries (conversions and webhooks) by state.", labels=["state"]
        )
        for state in ("queued", "active", "scheduled"):
            depth.add_metric([state], float(info[state]))
        families.append(depth)
        workers = float(len(info["workers"]))
        families.append(GaugeMetricFamily("convertd_workers", "Workers the queue sees alive.", value=workers))
    except Exception as exc:
        log.warning("metrics: the queue could not be read: %s", exc)
    try:
        async with asyncio.timeout(LIVE_TIMEOUT):
            counts = await job_rows.count_by_status(rt.pool)
        jobs = GaugeMetricFamily(
            "convertd_jobs", "Jobs in the database by status (expired: files deleted).", labels=["status"]
        )
        for status, n in counts.items():
            jobs.add_metric([status], float(n))
        families.append(jobs)
    except Exception as exc:
        log.warning("metrics: the jobs could not be counted: %s", exc)
    return families


async def exposition(rt: Runtime) -> bytes:
    """The Prometheus text format: this deployment's counts plus the live figures."""
    if os.environ.get(MULTIPROC_ENV):
        counted = CollectorRegistry()
        MultiProcessCollector(counted)  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
    else:
        counted = REGISTRY
    live = CollectorRegistry(auto_describe=False)
    live.register(_Fixed(await _live(rt)))
    # reading the per-process files is disk work: off the event loop
    return await asyncio.to_thread(lambda: generate_latest(counted) + generate_latest(live))

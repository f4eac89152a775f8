"""The one status body of a job: GET /v1/status (and cancel), the server-sent events of
/v1/events, and the webhook POST all send it.

"A download link only for a finished job whose files are still kept" is decided here once;
GraphQL's Job.downloadUrl asks `download_url()` too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.models import JobStatus
from app.services.links import links

if TYPE_CHECKING:
    from app.models import Job
    from app.runtime import Runtime
    from app.services.dispatch import Position


def downloadable(job: Job) -> bool:
    return job.status is JobStatus.FINISHED and job.expired_at is None


def download_url(rt: Runtime, job: Job, base_url: str) -> str | None:
    """The signed download URL, or None while there is nothing (or no longer anything) to fetch."""
    return links(rt, job, base_url).download_url if downloadable(job) else None


def body(
    rt: Runtime,
    job: Job,
    base_url: str | None,
    *,
    position: Position | None = None,
    delivery: bool = True,
) -> dict[str, Any]:
    """The job as clients see it. `base_url` None: no URLs (a webhook of a job submitted
    with no known public address); `delivery`: the webhook's own URL and outcome (left out of
    the webhook POST itself)."""
    out: dict[str, Any] = {
        "ok": job.status is not JobStatus.FAILED,
        "job_id": str(job.id),
        "status": job.status.value,
        "progress": round(job.progress, 4),
        "filetype": job.filetype,
        "input_format": job.input_format,
        "output_format": job.output_format,
        "created_at": job.created_at.isoformat(),
        # a worker took it (its first attempt): started_at - created_at is its wait in the queue
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
    if base_url is not None:
        out["status_url"] = links(rt, job, base_url).status_url
    if job.expired_at is not None:  # its files were deleted after the plan's retention
        out.update(expired_at=job.expired_at.isoformat(), file_name=job.output_name)
    elif job.status is JobStatus.FINISHED:
        if base_url is not None:
            out["download_url"] = download_url(rt, job, base_url)
        out.update(file_name=job.output_name, file_size=job.output_size, items=job.output_items)
        if job.output_notes:  # e.g. an archive's links, left out
            out["notes"] = job.output_notes
    if job.status is JobStatus.FAILED:
        out.update(error=job.error, hint=job.error_hint)
    if position is not None:
        out["queue"] = position._asdict()
    if delivery and job.webhook_url:
        out.update(webhook_url=job.webhook_url, webhook_status=job.webhook_status)
    return out

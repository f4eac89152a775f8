from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import strawberry

from app.api.graphql.scalars import JSON
from app.models import Job as JobModel
from app.models import JobStatus as JobStatusModel
from app.services import job_reads
from app.services import status as status_service
from app.services.links import links as job_links

if TYPE_CHECKING:
    from app.api.graphql.context import Context

JobStatus = strawberry.enum(JobStatusModel, name="JobStatus")


@strawberry.type(description="Where a pending job waits: workers serve accounts in turn.")
class QueuePosition:
    jobs_ahead: int = strawberry.field(description="The account's own queued jobs that start before it.")
    running: int = strawberry.field(description="The account's jobs processing now.")
    max_running: int | None = strawberry.field(
        description="The plan's cap on jobs processing at once; null: unlimited."
    )


# jobUpdates renders each version once for all its subscribers (fanout.py): a field may use
# the context's rt and base_url, never the caller (the shared context has none).
@strawberry.type(description="A conversion job. Subscribe to jobUpdates to follow it live.")
class Job:
    id: strawberry.ID
    filetype: str
    input_format: str
    output_format: str
    options: JSON
    status: JobStatus  # type: ignore[valid-type]  # strawberry.enum(...) wraps it: a type at run time
    progress: float = strawberry.field(description="0 to 1.")
    error: str | None
    error_hint: str | None
    attempts: int
    output_name: str | None
    output_size: int | None
    output_items: list[str] = strawberry.field(
        description="Files inside the output zip, when one input gave several outputs."
    )
    output_notes: list[str] = strawberry.field(
        description="What of the input is not in the output, and why (an archive's links)."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    webhook_url: str | None
    webhook_status: str | None = strawberry.field(
        description="'delivered', or why the webhook could not be delivered."
    )
    expired_at: datetime | None = strawberry.field(
        description="When its files were deleted, its plan's retention over."
    )
    _model: strawberry.Private[JobModel]

    @strawberry.field(description="REST status URL of this job.")
    def status_url(self, info: strawberry.Info[Context, None]) -> str:
        return job_links(info.context.rt, self._model, info.context.base_url).status_url

    @strawberry.field(description="Where the job waits while pending; null once it runs or ended.")
    async def queue(self, info: strawberry.Info[Context, None]) -> QueuePosition | None:
        found = await job_reads.position(info.context.rt, self._model)
        return QueuePosition(**found._asdict()) if found else None

    @strawberry.field(description="Signed, expiring URL that downloads the output without a key.")
    def download_url(self, info: strawberry.Info[Context, None]) -> str | None:
        return status_service.download_url(info.context.rt, self._model, info.context.base_url)

    @classmethod
    def from_model(cls, job: JobModel) -> Job:
        return cls(
            id=strawberry.ID(str(job.id)),
            filetype=job.filetype,
            input_format=job.input_format,
            output_format=job.output_format,
            options=JSON(job.options),
            status=job.status,
            progress=job.progress,
            error=job.error,
            error_hint=job.error_hint,
            attempts=job.attempts,
            output_name=job.output_name,
            output_size=job.output_size,
            output_items=job.output_items,
            output_notes=job.output_notes,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            updated_at=job.updated_at,
            webhook_url=job.webhook_url,
            webhook_status=job.webhook_status,
            expired_at=job.expired_at,
            _model=job,
        )


@strawberry.type
class JobConnection:
    nodes: list[Job]
    next_cursor: str | None = strawberry.field(description="Pass as `after` for the next page.")


@strawberry.type(description="A deleted job: what its files took (bytes; Float, as sizes outgrow Int).")
class DeletedJob:
    id: strawberry.ID
    freed_bytes: float


@strawberry.type(description="A stored upload; pass filePath to convert.")
class UploadedFile:
    file_path: str
    file_name: str
    file_size: int
    upload_id: int
    extension: str

from __future__ import annotations

import strawberry

from app.api.graphql.context import Context
from app.api.graphql.jobs.types import DeletedJob, Job, UploadedFile
from app.api.graphql.scalars import JSON, Upload
from app.services import job_changes, retention
from app.services import jobs as jobs_service
from app.services import uploads as uploads_service
from app.storage import IncomingFile


def _incoming(files: list[Upload]) -> list[IncomingFile]:
    """The files of this request: the view streams each Upload to disk as an IncomingFile."""
    stored: list[IncomingFile] = [f for f in files if isinstance(f, IncomingFile)]
    assert len(stored) == len(files), "an Upload that the view did not store"
    return stored


@strawberry.input(description="Give file(s) (uploads in this request), filePath(s), or a url to import from.")
class ConvertInput:
    filetype: str
    output_format: str
    file: Upload | None = None
    files: list[Upload] | None = None
    file_path: str | None = None
    file_paths: list[str] | None = None
    url: str | None = strawberry.field(
        default=None,
        description="An http(s) URL the input is imported from (public addresses only, "
        "at most 5 redirects, the upload size limit).",
    )
    input_format: str | None = strawberry.field(
        default=None, description="Overrides the format taken from the file name."
    )
    options: JSON | None = None
    webhook_url: str | None = strawberry.field(
        default=None, description="POSTed the job (signed) when it finishes or fails."
    )
    wait: int | None = strawberry.field(
        default=None,
        description="Seconds (1-60) to wait for the job to end before answering: the job "
        "comes back FINISHED or FAILED when it ended within the wait, else as it stands.",
    )


@strawberry.type
class JobMutations:
    @strawberry.mutation(description="Store files for later conversions (multipart request).")
    async def upload(self, info: strawberry.Info[Context, None], files: list[Upload]) -> list[UploadedFile]:
        ctx = info.context
        stored = await uploads_service.store(ctx.rt, ctx.principal, _incoming(files))
        return [
            UploadedFile(
                file_path=u.file_path,
                file_name=u.file_name,
                file_size=u.file_size,
                upload_id=u.id,
                extension=u.extension,
            )
            for u in stored
        ]

    @strawberry.mutation(description="Queue a conversion; follow it with jobUpdates, or wait for it.")
    async def convert(self, info: strawberry.Info[Context, None], input: ConvertInput) -> Job:
        ctx = info.context
        files = ([input.file] if input.file else []) + list(input.files or [])
        paths = ([input.file_path] if input.file_path else []) + list(input.file_paths or [])
        job = await jobs_service.convert(
            ctx.rt,
            ctx.principal,
            filetype=input.filetype,
            output_format=input.output_format,
            options=input.options,
            files=_incoming(files),
            file_paths=paths,
            input_format=input.input_format,
            webhook_url=input.webhook_url,
            base_url=ctx.base_url,
            wait=input.wait,
            url=input.url,
        )
        return Job.from_model(job)

    @strawberry.mutation(description="Cancel one of your pending or running jobs; it ends FAILED.")
    async def cancel_job(self, info: strawberry.Info[Context, None], id: strawberry.ID) -> Job:
        ctx = info.context
        return Job.from_model(await job_changes.cancel(ctx.rt, ctx.principal, str(id)))

    @strawberry.mutation(
        description="Delete one of your ended jobs and its files now; it is not found afterwards."
    )
    async def delete_job(self, info: strawberry.Info[Context, None], id: strawberry.ID) -> DeletedJob:
        ctx = info.context
        deleted = await retention.delete_job(ctx.rt, ctx.principal, str(id))
        return DeletedJob(id=strawberry.ID(str(deleted.job_id)), freed_bytes=deleted.freed_bytes)

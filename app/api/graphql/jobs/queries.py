from __future__ import annotations

import strawberry

from app.api.graphql.context import Context
from app.api.graphql.jobs.types import Job, JobConnection
from app.services import job_reads


@strawberry.type
class JobQueries:
    @strawberry.field(description="One of your jobs.")
    async def job(self, info: strawberry.Info[Context, None], id: strawberry.ID) -> Job:
        ctx = info.context
        return Job.from_model(await job_reads.get(ctx.rt, ctx.principal, str(id)))

    @strawberry.field(description="Your jobs, newest first.")
    async def jobs(
        self,
        info: strawberry.Info[Context, None],
        first: int = job_reads.JOBS_PAGE,
        after: str | None = None,
    ) -> JobConnection:
        ctx = info.context
        page = await job_reads.list_for(ctx.rt, ctx.principal, first=first, after=after)
        return JobConnection(nodes=[Job.from_model(j) for j in page.jobs], next_cursor=page.next_cursor)

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from app.api.graphql.context import Context
from app.api.graphql.jobs.types import Job
from app.services import jobs as jobs_service


@strawberry.type
class JobSubscriptions:
    @strawberry.subscription(
        description="The job as it stands, then every change; completes when it ends."
    )
    async def job_updates(
        self, info: strawberry.Info[Context, None], job_id: strawberry.ID
    ) -> AsyncGenerator[Job, None]:
        ctx = info.context
        async for job in jobs_service.watch(ctx.rt, ctx.principal, str(job_id)):
            yield Job.from_model(job)

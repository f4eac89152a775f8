from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from app.api.graphql.context import Context
from app.api.graphql.jobs import fanout
from app.api.graphql.jobs.types import Job
from app.services import job_reads


@strawberry.type
class JobSubscriptions:
    @strawberry.subscription(description="The job as it stands, then every change; completes when it ends.")
    async def job_updates(
        self, info: strawberry.Info[Context, None], job_id: strawberry.ID
    ) -> AsyncGenerator[Job, None]:
        ctx = info.context
        outlet = fanout.outlet_for(info)
        if outlet is None:  # not on one of our websockets: rendered here, event by event
            async for job in job_reads.watch(ctx.rt, ctx.principal, str(job_id)):
                yield Job.from_model(job)
            return
        # the job as it stands is read with this caller's credentials and rendered for it;
        # the versions after it are rendered once for every subscriber alike (fanout.py)
        async with fanout.following(ctx, outlet, str(job_id)) as (ident, follower):
            job = await job_reads.get(ctx.rt, ctx.principal, ident)
            yield Job.from_model(job)  # sent before this generator resumes
            if not job.terminal:
                await follower.follow(job.version)

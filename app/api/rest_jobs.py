"""/v1/jobs: deleting a job and its files at once (the rest of a job's routes are in rest.py)."""

from __future__ import annotations

from aiohttp import web

from app.api.request_context import runtime
from app.api.rest import ok, principal
from app.services import retention

routes = web.RouteTableDef()


@routes.delete("/v1/jobs/{job_id}")
async def delete_job(request: web.Request) -> web.Response:
    who = await principal(request)
    deleted = await retention.delete_job(runtime(request), who, request.match_info["job_id"])
    return ok({"job_id": str(deleted.job_id), "deleted": True, "freed_bytes": deleted.freed_bytes})

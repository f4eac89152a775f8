"""Enconvert's one-call route, `POST /v1/convert/{from}-to-{to}`, as its private-keys document
shows it (`curl -X POST .../v1/convert/json-to-xml -H "X-API-Key: sk_..." -F "file=@data.json"`).

The conversion is an ordinary job (quota, history, sandbox, events) that the request waits
for, as `POST /v1/convert` does with `wait`; the answer is Enconvert's JSON: `presigned_url`
(the job's signed download link), `object_key`, `filename`, `file_size` and
`conversion_time_seconds`. A failure is the job's error (422); a job still running when the
wait runs out is the usual 202 with its status and download URLs.
"""

from __future__ import annotations

from aiohttp import web

from app.api.multipart import read_form
from app.api.request_context import base_url, runtime
from app.api.rest import ok, principal
from app.errors import ConvertdError, ErrorCode
from app.models import JobStatus
from app.services import backpressure, jobs, storage_use
from app.services import formats as formats_service
from app.services.links import links as job_links

routes = web.RouteTableDef()

WAIT_SECONDS = 60  # the longest wait POST /v1/convert allows


@routes.post("/v1/convert/{pair}")
async def convert_pair(request: web.Request) -> web.Response:
    who = await principal(request)
    rt = runtime(request)
    pair = request.match_info["pair"]
    src, sep, dst = pair.partition("-to-")
    if not (sep and src and dst):
        raise ConvertdError(
            ErrorCode.NOT_FOUND,
            f"'{pair[:100]}' does not name a conversion.",
            hint="Name it <from>-to-<to>, e.g. POST /v1/convert/json-to-xml; GET /v1/formats lists them.",
        )
    filetype = formats_service.filetype_for(src, dst)
    await backpressure.admit(rt, who)
    await storage_use.check_quota(rt, who, 0)
    async with read_form(request, rt) as form:
        job = await jobs.convert(
            rt,
            who,
            filetype=filetype,
            output_format=dst,
            options=form.get("options"),
            files=form.all_files(),
            input_format=src,
            base_url=base_url(request),
            wait=WAIT_SECONDS,
            admitted=True,
        )
    links = job_links(rt, job, base_url(request))
    if job.status is JobStatus.FAILED:
        raise ConvertdError(
            ErrorCode.CONVERSION_FAILED,
            job.error or "The conversion failed.",
            hint=job.error_hint,
            headers={"X-Job-Id": str(job.id)},
        )
    if not job.terminal:
        body = {"job_id": str(job.id), "status": job.status.value}
        return ok({**body, "status_url": links.status_url, "download_url": links.download_url}, 202)
    began = job.started_at or job.created_at
    seconds = (job.finished_at - began).total_seconds() if job.finished_at else 0.0
    return web.json_response(
        {
            "presigned_url": links.download_url,
            "object_key": f"{job.id}/{job.output_name}",
            "filename": job.output_name,
            "file_size": job.output_size,
            "conversion_time_seconds": round(seconds, 3),
            "job_id": str(job.id),
        },
        headers={"X-Job-Id": str(job.id)},
    )

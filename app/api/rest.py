"""The SkyConvert-compatible /v1 routes, mapped onto the same services as GraphQL."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from app.api.files import file_response
from app.api.middlewares import PRINCIPAL, TRACE
from app.api.multipart import read_form
from app.api.request_context import base_url, runtime
from app.auth import request as auth_request
from app.auth.authenticate import authenticate
from app.auth.principal import Principal
from app.errors import ConvertdError, ErrorCode
from app.models import Job, JobStatus, Upload
from app.services import backpressure, job_changes, job_reads, jobs, keys, storage_use, uploads
from app.services import formats as formats_service
from app.services import status as status_service
from app.services.dispatch import Position
from app.services.links import links as job_links

routes = web.RouteTableDef()
VERSION = "1.0"


async def principal(request: web.Request) -> Principal:
    """The caller, admitted to this route (app/auth/authenticate.py), or the refusal."""
    endpoint = (
        request.match_info.route.resource.canonical if request.match_info.route.resource else request.path
    )
    info = auth_request.from_http(request, endpoint)
    request[TRACE] = info.trace
    who = await authenticate(runtime(request), info)
    request[PRINCIPAL] = who
    return who


def ok(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response({"ok": True, **body}, status=status)


def upload_body(u: Upload) -> dict[str, Any]:
    return {
        "file_path": u.file_path,
        "file_name": u.file_name,
        "file_size": u.file_size,
        "upload_id": u.id,
        "extension": u.extension,
    }


def status_body(request: web.Request, job: Job, position: Position | None = None) -> dict[str, Any]:
    return status_service.body(runtime(request), job, base_url(request), position=position)


@routes.get("/v1/")
@routes.get("/v1")
async def info(request: web.Request) -> web.Response:
    return ok(
        {
            "name": "Convertd",
            "version": VERSION,
            "docs_url": f"{base_url(request)}/v1/openapi.json",
            "endpoints": [
                "GET /v1/",
                "GET /v1/openapi.json",
                "GET /v1/formats",
                "POST /v1/upload",
                "OPTIONS /v1/uploads/tus/",
                "POST /v1/uploads/tus/",
                "HEAD /v1/uploads/tus/{upload_id}",
                "GET /v1/uploads/tus/{upload_id}",
                "PATCH /v1/uploads/tus/{upload_id}",
                "DELETE /v1/uploads/tus/{upload_id}",
                "POST /v1/convert",
                "GET /v1/status/{job_id}",
                "GET /v1/events/{job_id}",
                "POST /v1/cancel/{job_id}",
                "GET /v1/download/{job_id}",
                "DELETE /v1/jobs/{job_id}",
                "GET /v1/keys/me",
                "POST /v1/token/jwt",
                "POST /v1/token/create",
                "DELETE /v1/token/{token}",
                "GET /v1/account",
                "GET /v1/account/consumption",
                "GET /v1/account/statistics",
                "GET /v1/account/requests",
                "GET /v1/account/keys",
                "POST /v1/account/keys",
                "PATCH /v1/account/keys/{key_id}",
                "DELETE /v1/account/keys/{key_id}",
                "POST /v1/account/master-token",
            ],
            "graphql": f"{base_url(request)}/graphql",
        }
    )


@routes.get("/v1/formats")
async def list_formats(request: web.Request) -> web.Response:
    await principal(request)
    filetypes = formats_service.formats()
    if request.query.get("options") in ("1", "true"):
        for filetype, group in filetypes.items():
            group["conversions"] = formats_service.conversions(filetype)  # type: ignore[assignment]  # an extra list beside the counts
    return ok({"filetypes": filetypes})


@routes.post("/v1/upload")
async def upload(request: web.Request) -> web.Response:
    who = await principal(request)
    rt = runtime(request)
    await storage_use.check_quota(rt, who, 0)  # an account at its quota: refused before the body is read
    async with read_form(request, rt) as form:
        stored = await uploads.store(rt, who, form.all_files())
    return ok({"files": [upload_body(u) for u in stored]})


@routes.post("/v1/convert")
async def convert(request: web.Request) -> web.StreamResponse:
    who = await principal(request)
    rt = runtime(request)
    # a full queue or backlog refuses before the body is read (a flood costs no disk), once
    # per request (admitted=True below); the account's cap is applied exactly at the insert
    await backpressure.admit(rt, who)
    await storage_use.check_quota(rt, who, 0)
    if request.content_type == "application/json":
        body = await json_body(request)
        job = await jobs.convert(
            rt,
            who,
            filetype=_string(body, "filetype"),
            output_format=_string(body, "output_format"),
            options=body.get("options"),
            file_paths=_as_list(body.get("file_path")),
            input_format=_string(body, "input_format"),
            webhook_url=_string(body, "webhook_url"),
            base_url=base_url(request),
            wait=body.get("wait", request.query.get("wait")),
            url=_as_text(body.get("url")),
            admitted=True,
        )
    else:
        async with read_form(request, rt) as form:
            job = await jobs.convert(
                rt,
                who,
                filetype=form.get("filetype"),
                output_format=form.get("output_format"),
                options=form.get("options"),
                files=form.all_files(),
                file_paths=form.fields.get("file_path", []),
                input_format=form.get("input_format"),
                webhook_url=form.get("webhook_url"),
                base_url=base_url(request),
                wait=form.get("wait") or request.query.get("wait"),
                url=form.get("url"),
                admitted=True,
            )
    if job.terminal:  # a synchronous convert (wait) that ended within its wait
        return await _settled(request, job)
    links = job_links(rt, job, base_url(request))
    return ok(
        {
            "job_id": str(job.id),
            "status": job.status.value,
            "status_url": links.status_url,
            "download_url": links.download_url,
        },
        status=202,
    )


async def _settled(request: web.Request, job: Job) -> web.StreamResponse:
    """The converted file itself (or, asked for JSON, the status); a failure is its error."""
    headers = {"X-Job-Id": str(job.id)}
    if job.status is JobStatus.FAILED:
        raise ConvertdError(
            ErrorCode.CONVERSION_FAILED,
            job.error or "The conversion failed.",
            hint=job.error_hint,
            headers=headers,
        )
    if "application/json" in request.headers.get("Accept", ""):
        return web.json_response(status_body(request, job), headers=headers)
    # the job as it ended, heard over its events: not read again
    return await file_response(request, runtime(request), job_reads.output_of(job), headers)


@routes.get("/v1/status/{job_id}")
async def status(request: web.Request) -> web.Response:
    who = await principal(request)
    rt = runtime(request)
    job = await job_reads.get(rt, who, request.match_info["job_id"])
    return web.json_response(status_body(request, job, await job_reads.position(rt, job)))


@routes.get("/v1/events/{job_id}")
async def events(request: web.Request) -> web.StreamResponse:
    """The job's status as server-sent events: the jobUpdates subscription for REST clients."""
    who = await principal(request)
    stream = job_reads.watch(runtime(request), who, request.match_info["job_id"])
    first = await anext(stream)  # an unknown job is a plain 404, before the stream starts
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)

    async def send(job: Job) -> None:
        body = json.dumps(status_body(request, job, await job_reads.position(runtime(request), job)))
        await response.write(f"id: {job.version}\nevent: status\ndata: {body}\n\n".encode())

    await send(first)
    async for job in stream:  # watch() ends after the terminal status
        await send(job)
    await response.write_eof()
    return response


@routes.post("/v1/cancel/{job_id}")
async def cancel(request: web.Request) -> web.Response:
    who = await principal(request)
    job = await job_changes.cancel(runtime(request), who, request.match_info["job_id"])
    return web.json_response(status_body(request, job))


@routes.get("/v1/download/{job_id}")
async def download(request: web.Request) -> web.StreamResponse:
    q = request.query
    signed = "signature" in q or "expires" in q
    who = None if signed else await principal(request)
    result = await job_reads.download(
        runtime(request),
        request.match_info["job_id"],
        principal=who,
        expires=q.get("expires"),
        signature=q.get("signature"),
    )
    return await file_response(request, runtime(request), result)


@routes.get("/v1/keys/me")
async def keys_me(request: web.Request) -> web.Response:
    who = await principal(request)
    info = await keys.me(runtime(request), who)
    storage = await storage_use.storage_use(runtime(request), who)
    return ok(
        {
            **info.key.public(),
            "plan": info.plan.name,
            "max_running": info.plan.max_running,
            "rate_limits": info.rate_limits.body(),
            "storage": storage.body(),
        }
    )


def _string(body: dict[str, Any], name: str) -> str | None:
    """A JSON body's text field; another JSON type is a 400 (the services read strings)."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ConvertdError(
            ErrorCode.BAD_REQUEST, f"'{name}' must be a string.", hint=f'e.g. "{name}": "webp"', field=name
        )
    return value


def _as_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConvertdError(
            ErrorCode.BAD_REQUEST,
            "The body is not valid JSON.",
            hint="Send a JSON object, or multipart/form-data with the file.",
        ) from exc
    if not isinstance(body, dict):
        raise ConvertdError(
            ErrorCode.BAD_REQUEST,
            f"The body must be a JSON object, not {type(body).__name__}.",
            hint='Send the fields by name, e.g. {"file_path": "...", "filetype": "image", '
            '"output_format": "webp"}.',
        )
    return body

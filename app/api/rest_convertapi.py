"""ConvertAPI v2's protocol under /convertapi/, so its official SDKs work against Convertd.

Set the SDK's base URI to http://HOST/convertapi/ and its credentials to a Convertd API key,
JWT or access token. The routes are thin: the same services, access rules (operations.py
lists these routes under upload, convert and key info), rate limits and conversion quota
as /v1. Errors come in ConvertAPI's shape (app/api/convertapi_errors.py); its parameters are
read in app/api/convertapi_params.py.

    POST /convertapi/upload                  raw body, Content-Disposition names the file
    POST /convertapi/convert/{src}/to/{dst}  form, multipart or JSON {"Parameters": [...]}
    GET  /convertapi/user                    the account and its conversions
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Any

from aiohttp import web
from aiohttp.multipart import content_disposition_filename, parse_content_disposition

from app.api.convertapi_errors import PREFIX
from app.api.convertapi_params import (
    MAX_TIMEOUT,
    bad,
    converter_options,
    flag,
    read_params,
    resolve_inputs,
    timeout,
)
from app.api.request_context import base_url, runtime
from app.api.rest import principal
from app.auth.principal import Principal
from app.errors import ConvertdError, ErrorCode
from app.models import Job, JobStatus
from app.services import accounts, backpressure, job_changes, job_reads, jobs, retention, storage_use, uploads
from app.services import formats as formats_service
from app.services.links import links as job_links
from app.storage import extension_of

routes = web.RouteTableDef()

_CHUNK = 256 * 1024


@routes.post(PREFIX + "/upload")
async def upload(request: web.Request) -> web.Response:
    """The raw body is the file; its name comes from Content-Disposition (or ?filename=)."""
    who = await principal(request)
    rt = runtime(request)
    await storage_use.check_quota(rt, who, 0)  # an account at its quota: refused before the body
    name = _upload_name(request)
    incoming = await rt.storage.receive(
        request.content.iter_chunked(_CHUNK),
        name,
        request.headers.get("Content-Type"),
        rt.settings.max_upload_bytes,
    )
    try:
        [stored] = await uploads.store(rt, who, [incoming])
    finally:
        rt.storage.discard([incoming])  # gone already once claimed
    return web.json_response(
        {"FileId": stored.token, "FileName": stored.file_name, "FileExt": stored.extension}
    )


def _upload_name(request: web.Request) -> str:
    header = request.headers.get("Content-Disposition")
    name = None
    if header:
        _, disposition = parse_content_disposition(header)
        name = content_disposition_filename(disposition, "filename")
    name = name or request.query.get("filename") or request.query.get("FileName")
    if not name:
        raise bad(
            "The upload has no file name.",
            "Send Content-Disposition: attachment; filename*=UTF-8''photo.png (or ?filename=photo.png).",
            "filename",
        )
    return name


@routes.post(PREFIX + "/convert/{src}/to/{dst}")
async def convert(request: web.Request) -> web.Response:
    """Convert, wait for the job(s) (up to Timeout), answer the files as ConvertAPI does."""
    who = await principal(request)
    rt = runtime(request)
    await backpressure.admit(rt, who)  # a full queue refuses before the body is read
    await storage_use.check_quota(rt, who, 0)
    src, dst = request.match_info["src"].lower(), request.match_info["dst"].lower()
    created: list[Job] = []
    async with read_params(request) as params, contextlib.AsyncExitStack() as stack:
        # "any" (ConvertAPI's from-format for zip, and for mixed inputs): each file's extension
        declared = None if src in ("any", "*") else src
        if declared:  # an impossible pair is refused before any input is looked at
            formats_service.filetype_for(declared, dst)
        store, seconds = flag(params, "StoreFile", False), timeout(params)
        inputs = await resolve_inputs(request, who, params, stack)
        first = declared or extension_of(inputs.names[0])
        filetype = formats_service.filetype_for(first, dst)
        options = converter_options(params, filetype, first, dst)
        common: dict[str, Any] = {
            "filetype": filetype,
            "output_format": dst,
            "options": options,
            "input_format": declared,
            "base_url": base_url(request),
        }
        try:
            if formats_service.takes_many(filetype, first, dst):
                created.append(
                    await jobs.convert(rt, who, files=inputs.files, file_paths=inputs.file_paths, **common)
                )
            else:  # a one-input converter: one job per file, every result in Files
                for f in inputs.files:
                    created.append(await jobs.convert(rt, who, files=[f], **common))
                for p in inputs.file_paths:
                    created.append(await jobs.convert(rt, who, file_paths=[p], **common))
        except BaseException:
            # one refused input refuses the request: the jobs of the others are withdrawn
            await _cancel(rt, who, created)
            raise
        out_name = params.get("FileName")
    ended = await asyncio.gather(*(jobs.settle(rt, who, job, seconds) for job in created))
    await _check_ended(rt, who, ended, seconds)
    files = [
        await _result_file(request, who, job, store, out_name, i, len(ended)) for i, job in enumerate(ended)
    ]
    return web.json_response({"ConversionCost": len(ended), "Files": files})


async def _cancel(rt: Any, who: Principal, created: list[Job]) -> None:
    """Stop jobs nobody will collect; cancelling refunds their conversions."""
    for job in created:
        with contextlib.suppress(ConvertdError):  # it may have ended meanwhile
            await job_changes.cancel(rt, who, str(job.id))


async def _check_ended(rt: Any, who: Principal, ended: list[Job], seconds: float) -> None:
    late = [job for job in ended if not job.terminal]
    await _cancel(rt, who, late)  # nobody will collect them
    if late:
        raise ConvertdError(
            ErrorCode.CONVERSION_FAILED,
            f"The conversion did not finish within Timeout ({seconds:g} s); it was cancelled.",
            hint=f"Pass a larger Timeout (up to {MAX_TIMEOUT} s), or use /v1 or GraphQL and follow the job.",
            field="Timeout",
        )
    for job in ended:
        if job.status is JobStatus.FAILED:
            raise ConvertdError(
                ErrorCode.CONVERSION_FAILED,
                job.error or "The conversion failed.",
                hint=job.error_hint,
            )


async def _result_file(
    request: web.Request, who: Principal, job: Job, store: bool, out_name: Any, index: int, count: int
) -> dict[str, Any]:
    rt = runtime(request)
    name = job.output_name or "output"
    ext = extension_of(name)
    if isinstance(out_name, str) and out_name.strip():  # FileName: the result's name, no extension
        stem = out_name.strip() if count == 1 else f"{out_name.strip()}-{index + 1}"
        name = f"{stem}.{ext}" if ext else stem
    entry: dict[str, Any] = {
        "FileName": name,
        "FileExt": ext,
        "FileSize": job.output_size,
        "FileId": str(job.id),
    }
    if store:
        entry["Url"] = job_links(rt, job, base_url(request)).download_url
        return entry
    # StoreFile=false: the bytes in the answer, and nothing kept
    found = await job_reads.download(rt, str(job.id), principal=who)
    data = b"".join([chunk async for chunk in rt.storage.chunks(found.key)])
    entry["FileData"] = base64.b64encode(data).decode()
    await retention.delete_job(rt, who, str(job.id))
    return entry


@routes.get(PREFIX + "/user")
async def user(request: web.Request) -> web.Response:
    """The account behind the credential, and its conversions (ConvertAPI's user info)."""
    who = await principal(request)
    account = await accounts.get_account(runtime(request).pool, who.account_id)
    return web.json_response(
        {
            "Id": account.id,
            "FullName": account.name,
            "Active": account.active,
            "Plan": account.plan.name,
            "ConversionsTotal": account.plan.conversions,
            "ConversionsConsumed": account.conversions_used,
            "ConversionsRemaining": account.conversions_remaining,
            "ApiKeyName": who.key.name if who.key else None,
        }
    )

"""tus 1.0 resumable uploads at /v1/uploads/tus/ (core, creation, termination, expiration).

Thin: headers in, app/services/tus.py, headers out. Every answer carries Tus-Resumable, the
errors too (the error middleware renders them as JSON with their hint). A finished upload's
file_path, the one `convert` takes, is in the X-File-Path header of the last PATCH and of
HEAD, and in GET's JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import format_datetime

from aiohttp import web

from app.api.request_context import RUNTIME, base_url, runtime
from app.api.rest import principal
from app.errors import ConvertdError, ErrorCode
from app.runtime import Runtime
from app.services import tus

routes = web.RouteTableDef()
BASE = "/v1/uploads/tus/"
_CHUNK = 256 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def tus_route(handler: Handler) -> Handler:
    """Tus-Resumable on every answer; a request of another protocol version is a 412."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            if request.method != "OPTIONS" and request.headers.get("Tus-Resumable") != tus.VERSION:
                raise ConvertdError(
                    ErrorCode.TUS_VERSION_UNSUPPORTED,
                    f"Tus-Resumable must be {tus.VERSION}.",
                    hint="Use a tus 1.0 client, or send the header Tus-Resumable: 1.0.0.",
                    headers={"Tus-Version": tus.VERSION},
                )
            response = await handler(request)
        except ConvertdError as err:
            err.headers.setdefault("Tus-Resumable", tus.VERSION)
            raise
        response.headers["Tus-Resumable"] = tus.VERSION
        return response

    return wrapped


def _headers(upload: tus.TusUpload) -> dict[str, str]:
    headers = {
        "Upload-Offset": str(upload.upload_offset),
        "Upload-Expires": format_datetime(upload.expires_at, usegmt=True),
        "Cache-Control": "no-store",
    }
    if upload.file_path is not None:
        headers["X-File-Path"] = upload.file_path
    return headers


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    while chunk := await request.content.read(_CHUNK):
        yield chunk


def _public_base(rt: Runtime, request: web.Request) -> str:
    return rt.settings.public_url or base_url(request)


@routes.route("OPTIONS", "/v1/uploads/tus/")
@routes.route("OPTIONS", "/v1/uploads/tus/{upload_id}")
@tus_route
async def options(request: web.Request) -> web.Response:
    who = await principal(request)
    return web.Response(
        status=204,
        headers={
            "Tus-Resumable": tus.VERSION,
            "Tus-Version": tus.VERSION,
            "Tus-Extension": tus.EXTENSIONS,
            "Tus-Max-Size": str(tus.max_size(runtime(request), who)),
        },
    )


@routes.post("/v1/uploads/tus/")
@tus_route
async def create(request: web.Request) -> web.Response:
    who = await principal(request)
    rt = runtime(request)
    upload = await tus.create(
        rt, who, request.headers.get("Upload-Length"), request.headers.get("Upload-Metadata")
    )
    location = f"{_public_base(rt, request)}{BASE}{upload.id}"
    return web.Response(status=201, headers={"Location": location, **_headers(upload)})


@routes.head("/v1/uploads/tus/{upload_id}")
@tus_route
async def head(request: web.Request) -> web.Response:
    who = await principal(request)
    upload = await tus.current(runtime(request), who, request.match_info["upload_id"])
    headers = {"Upload-Length": str(upload.upload_length), **_headers(upload)}
    if upload.metadata:
        headers["Upload-Metadata"] = upload.metadata
    return web.Response(status=200, headers=headers)


@routes.get("/v1/uploads/tus/{upload_id}", allow_head=False)
@tus_route
async def status(request: web.Request) -> web.Response:
    """Not part of tus: the upload as JSON, for people and scripts."""
    who = await principal(request)
    upload = await tus.current(runtime(request), who, request.match_info["upload_id"])
    return web.json_response(
        {
            "ok": True,
            "id": upload.id,
            "file_name": upload.file_name,
            "upload_length": upload.upload_length,
            "upload_offset": upload.upload_offset,
            "expires_at": upload.expires_at.isoformat(),
            "finished": upload.finished,
            "file_path": upload.file_path,
            "upload_id": upload.upload_id,
        },
        headers={"Cache-Control": "no-store"},
    )


@routes.patch("/v1/uploads/tus/{upload_id}")
@tus_route
async def patch(request: web.Request) -> web.Response:
    who = await principal(request)
    if request.content_type != "application/offset+octet-stream":
        raise ConvertdError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            "A PATCH body must be sent as Content-Type: application/offset+octet-stream.",
            hint="Send the next bytes of the file with that Content-Type and Upload-Offset.",
        )
    upload = await tus.append(
        runtime(request),
        who,
        request.match_info["upload_id"],
        request.headers.get("Upload-Offset"),
        request.content_length,
        _body(request),
    )
    return web.Response(status=204, headers=_headers(upload))


@routes.delete("/v1/uploads/tus/{upload_id}")
@tus_route
async def delete(request: web.Request) -> web.Response:
    who = await principal(request)
    await tus.terminate(runtime(request), who, request.match_info["upload_id"])
    return web.Response(status=204)


async def sweeper(app: web.Application) -> AsyncIterator[None]:
    """Expired resumable uploads are removed while the API runs (their bytes are local)."""
    task = asyncio.create_task(tus.sweep_forever(app[RUNTIME]))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

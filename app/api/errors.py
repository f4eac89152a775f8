"""The one place HTTP-level errors become JSON: an aiohttp middleware over ConvertdError.

Errors raised before a GraphQL operation runs (an oversized or unauthenticated multipart
upload) are rendered in the GraphQL response shape on /graphql, REST's everywhere else.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from app.errors import ConvertdError, ErrorCode
from app.outages import is_outage, unavailable

log = logging.getLogger(__name__)


ERROR_CODE = web.ResponseKey("convertd.error_code", str)  # the error code, for the request log


GRAPHQL_PATH = "/graphql"
# refusals that may come before the request's body is read (size, quota, backpressure)
_UNREAD_BODY = frozenset({
    ErrorCode.PAYLOAD_TOO_LARGE, ErrorCode.STORAGE_QUOTA_EXCEEDED, ErrorCode.TOO_MANY_PENDING,
    ErrorCode.OVERLOADED,
})  # fmt: skip


def render(err: ConvertdError, path: str = "") -> web.Response:
    body = (
        {"data": None, "errors": [{"message": err.message, "extensions": err.extensions}]}
        if path == GRAPHQL_PATH
        else err.body()
    )
    response = web.json_response(body, status=err.status, headers=err.headers)
    if err.code in _UNREAD_BODY:
        # the rest of the body may never have been read: close rather than wait for it
        response.force_close()
    response[ERROR_CODE] = err.code.value
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ConvertdError as err:
        return render(err, request.path)
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith("/v1"):
            raise
        code = {404: ErrorCode.NOT_FOUND, 413: ErrorCode.PAYLOAD_TOO_LARGE}.get(
            exc.status, ErrorCode.BAD_REQUEST
        )
        hint = "See GET /v1/ for the list of endpoints." if exc.status in (404, 405) else None
        return web.json_response(
            {"error": exc.reason, "message": exc.text or exc.reason, "hint": hint, "error_code": code.value},
            status=exc.status,
        )
    except Exception as exc:
        if is_outage(exc):
            log.warning("%s %s: a server is out of reach: %r", request.method, request.path, exc)
            return render(unavailable(exc), request.path)
        log.exception("unhandled error on %s %s", request.method, request.path)
        internal = ConvertdError(
            ErrorCode.INTERNAL, "Something went wrong on our side.", "Try again in a moment."
        )
        return render(internal)

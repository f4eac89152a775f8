"""The one place HTTP-level errors become JSON: an aiohttp middleware over ConvertdError.

Errors raised before a GraphQL operation runs (an oversized or unauthenticated multipart
upload) are rendered in the GraphQL response shape on /graphql, ConvertAPI's under
/convertapi/ (app/api/convertapi_errors.py), REST's everywhere else.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from app.api import convertapi_errors
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
    body: dict[str, object]
    if path == GRAPHQL_PATH:
        body = {"data": None, "errors": [{"message": err.message, "extensions": err.extensions}]}
    elif convertapi_errors.is_convertapi(path):
        body = convertapi_errors.body(err)
    else:
        body = err.body()
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
            if exc.status >= 400 and convertapi_errors.is_convertapi(request.path):
                return render(_convertapi_refusal(exc), request.path)
            if exc.status == 404 and request.path != GRAPHQL_PATH:
                return render(_nowhere(request), request.path)
            raise
        return render(_rest_refusal(request, exc), request.path)
    except Exception as exc:
        if is_outage(exc):
            log.warning("%s %s: a server is out of reach: %r", request.method, request.path, exc)
            return render(unavailable(exc), request.path)
        log.exception("unhandled error on %s %s", request.method, request.path)
        internal = ConvertdError(
            ErrorCode.INTERNAL, "Something went wrong on our side.", "Try again in a moment."
        )
        return render(internal, request.path if convertapi_errors.is_convertapi(request.path) else "")


def _rest_refusal(request: web.Request, exc: web.HTTPException) -> ConvertdError:
    """aiohttp's own 404/405/413 under /v1: what was asked, and where to look instead."""
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return ConvertdError(
            ErrorCode.METHOD_NOT_ALLOWED,
            f"{request.method} is not allowed on {request.path}.",
            f"This route answers {allowed}. See GET /v1/ for the list of endpoints.",
            headers={"Allow": allowed},
        )
    if exc.status == 404:
        return ConvertdError(
            ErrorCode.NOT_FOUND,
            f"There is no route {request.path}.",
            "See GET /v1/ for the list of endpoints (and GET /v1/openapi.json for their bodies).",
        )
    if exc.status == 413:
        return ConvertdError(
            ErrorCode.PAYLOAD_TOO_LARGE, exc.reason, "Send a smaller body; files go as multipart file parts."
        )
    return ConvertdError(
        ErrorCode.BAD_REQUEST, exc.text or exc.reason, "See GET /v1/openapi.json for each route's request."
    )


def _nowhere(request: web.Request) -> ConvertdError:
    """A path outside every API (/api/v1/..., a typo): where the APIs are."""
    return ConvertdError(
        ErrorCode.NOT_FOUND,
        f"There is no route {request.path}.",
        "REST is under /v1/ (GET /v1/ lists it), GraphQL at /graphql, ConvertAPI's routes "
        "under /convertapi/, the conversion page at /.",
    )


def _convertapi_refusal(exc: web.HTTPException) -> ConvertdError:
    """aiohttp's own 404/405/413 on a /convertapi/ path, in ConvertAPI's shape."""
    codes = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED, 413: ErrorCode.PAYLOAD_TOO_LARGE}
    code = codes.get(exc.status, ErrorCode.BAD_REQUEST)
    hint = (
        "Routes: POST /convertapi/upload, POST /convertapi/convert/{from}/to/{to}, GET /convertapi/user, "
        "POST /convertapi/token/jwt, POST /convertapi/token/create, DELETE /convertapi/token/{token}."
        if exc.status in (404, 405)
        else "Check the request against ConvertAPI's documentation of this route."
    )
    return ConvertdError(code, exc.reason, hint)

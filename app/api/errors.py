"""The one place REST errors become JSON: an aiohttp middleware over ConvertdError."""

from __future__ import annotations

import logging

from aiohttp import web

from app.errors import ConvertdError, ErrorCode

log = logging.getLogger(__name__)


def render(err: ConvertdError) -> web.Response:
    return web.json_response(err.body(), status=err.status, headers=err.headers)


@web.middleware
async def error_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    try:
        return await handler(request)
    except ConvertdError as err:
        return render(err)
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
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        err = ConvertdError(ErrorCode.INTERNAL, "Something went wrong on our side.", "Try again in a moment.")
        return render(err)

"""Every HTTP answer gets a request id (X-Request-Id), a count in convertd_http_requests and
one access line in the JSON log (probes excepted), whatever route, status or error it ended
with."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from app import logs, metrics
from app.api.health import PROBE_PATHS
from app.api.request_context import runtime

REQUEST_ID = web.RequestKey("convertd.request_id", str)
HEADER = "X-Request-Id"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
access_log = logging.getLogger("convertd.access")


def _route(request: web.Request) -> str:
    """The route's template (/v1/status/{job_id}), never the raw path: labels stay few."""
    match = request.match_info
    if match.http_exception is not None or match.route.resource is None:
        return "unmatched"
    return match.route.resource.canonical


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = logs.incoming_or_new(request.headers.get(HEADER))
    request[REQUEST_ID] = rid
    token = logs.request_id.set(rid)  # every log line of this request carries it
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        method = request.method if request.method in _METHODS else "OTHER"
        metrics.REQUESTS.labels(method, _route(request), str(status)).inc()
        # probes come every few seconds from load balancers and Prometheus: counted, not logged
        if runtime(request).settings.access_log and request.path not in PROBE_PATHS:
            access_log.info(
                "%s %s %s", request.method, request.path, status,
                extra={"method": request.method, "path": request.path, "status": status,
                       "duration_ms": round((time.perf_counter() - started) * 1000, 2)},
            )  # fmt: skip
        logs.request_id.reset(token)


async def send_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: streamed answers (SSE, files, websockets) and errors get it too."""
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers[HEADER] = rid

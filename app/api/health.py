"""Probes and metrics for operators: GET /healthz, GET /readyz, GET /metrics (no credentials).

They sit outside /v1: no API key, no rate limit, no request log line; put /metrics behind
the proxy's own access rule if the figures should not be public.
"""

from __future__ import annotations

from aiohttp import web

from app import metrics
from app.api.request_context import runtime
from app.services import health

routes = web.RouteTableDef()
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process answers; its dependencies are /readyz's business."""
    return web.json_response({"ok": True, "status": "alive"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    found = await health.readiness(runtime(request))
    body = {
        "ok": found.ready,
        "status": "ready" if found.ready else "not ready",
        "components": found.components,
        "engines": found.engines,
    }
    return web.json_response(body, status=200 if found.ready else 503, headers={"Cache-Control": "no-store"})


@routes.get("/metrics")
async def metrics_page(request: web.Request) -> web.Response:
    body = await metrics.exposition(runtime(request))
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

"""HTTP-wide rules: HTTPS only (when required), CORS for browsers, and the request log."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from app.api.convertapi_errors import is_convertapi
from app.api.errors import ERROR_CODE, render
from app.api.health import PROBE_PATHS
from app.api.request_context import runtime
from app.auth.network import is_secure
from app.auth.principal import Principal
from app.auth.request import Trace
from app.errors import ConvertdError, ErrorCode

TRACE = web.RequestKey("convertd.trace", Trace)  # set once a credential is read
PRINCIPAL = web.RequestKey("convertd.principal", Principal)  # the admitted caller

# Credentials travel in headers, never in cookies, so any origin may call (browsers with JWTs);
# a page on another site gains nothing ambient from the visitor's browser.
ALLOW_HEADERS = (
    "Authorization, X-API-Key, Content-Type, Apollo-Require-Preflight, GraphQL-Preflight, X-Request-Id"
)
EXPOSE_HEADERS = (
    "Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Content-Disposition,"
    " X-Request-Id, Location, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Upload-Offset,"
    " Upload-Length, Upload-Expires, Upload-Metadata, X-File-Path"
)


def _api_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/") or path == "/graphql" or is_convertapi(path)


@web.middleware
async def https_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = runtime(request).settings
    # load balancers and Prometheus probe over plain HTTP inside the network
    if settings.require_https and request.path not in PROBE_PATHS:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if not is_secure(
            request.secure, peer[0] if peer else None, request.headers, settings.trusted_proxies
        ):
            return render(
                ConvertdError(
                    ErrorCode.HTTPS_REQUIRED,
                    "All requests must be sent over HTTPS. HTTP connections are rejected.",
                    f"Use https://{request.host}{request.path_qs}.",
                )
            )
    return await handler(request)


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not _api_path(request.path):
        return await handler(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers")
                or ALLOW_HEADERS,
                "Access-Control-Max-Age": "600",
                "Vary": "Access-Control-Request-Headers",
            },
        )
    response = await handler(request)
    if "Origin" in request.headers and not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    return response


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Rate-limit headers on every /v1 (and /convertapi/) answer to a known caller, and its
    line in the request log.

    GraphQL logs per operation (app/api/graphql/access.py); this covers REST.
    """
    response = await handler(request)
    if not request.path.startswith("/v1") and not is_convertapi(request.path):
        return response
    principal = request.get(PRINCIPAL)
    if principal is not None and principal.rate is not None and not response.prepared:
        for name, value in principal.rate.headers().items():
            response.headers.setdefault(name, value)
    trace = request.get(TRACE)
    if trace is not None:
        route = (
            request.match_info.route.resource.canonical if request.match_info.route.resource else request.path
        )
        runtime(request).request_log.record(
            trace,
            transport="rest",
            route=f"{request.method} {route}",
            status=response.status,
            error_code=response.get(ERROR_CODE),
        )
    return response

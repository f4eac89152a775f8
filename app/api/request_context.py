"""What every API handler reaches through its request: the runtime (pool, queue, storage,
settings) the app was built with, and the base URL the caller used."""

from __future__ import annotations

from aiohttp import web

from app.runtime import Runtime

RUNTIME = web.AppKey("runtime", Runtime)


def runtime(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


def base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"

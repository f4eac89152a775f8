"""GET /v1/openapi.json: the document, with the request's own URL as its server."""

from __future__ import annotations

from aiohttp import web

from app.api.openapi.document import document
from app.api.request_context import base_url, runtime

routes = web.RouteTableDef()


@routes.get("/v1/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    server = (runtime(request).settings.public_url or base_url(request)).rstrip("/")
    return web.json_response({**document(), "servers": [{"url": server}]})

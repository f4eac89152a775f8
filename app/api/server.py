"""The aiohttp application: REST /v1 and GraphQL at /graphql over one runtime."""

from __future__ import annotations

from aiohttp import web

from app.api import rest
from app.api.errors import error_middleware
from app.api.graphql.view import ConvertdGraphQLView
from app.api.keys import RUNTIME
from app.runtime import Runtime


def build_app(rt: Runtime) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=2 * 1024**2)
    app[RUNTIME] = rt
    app.router.add_routes(rest.routes)
    app.router.add_route("*", "/graphql", ConvertdGraphQLView())
    return app

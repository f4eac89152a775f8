"""The aiohttp application: REST /v1 and GraphQL at /graphql over one runtime."""

from __future__ import annotations

from aiohttp import web

from app.api import (
    health,
    pages,
    rest,
    rest_admin,
    rest_convertapi,
    rest_enconvert,
    rest_jobs,
    rest_tokens,
    rest_tus,
)
from app.api.errors import error_middleware
from app.api.graphql.view import ConvertdGraphQLView
from app.api.middlewares import access_middleware, cors_middleware, https_middleware
from app.api.observe import observe_middleware, send_request_id
from app.api.openapi import view as openapi
from app.api.request_context import RUNTIME
from app.runtime import Runtime


def build_app(rt: Runtime) -> web.Application:
    app = web.Application(
        middlewares=[
            observe_middleware,
            https_middleware,
            cors_middleware,
            access_middleware,
            error_middleware,
        ],
        client_max_size=2 * 1024**2,
    )
    app[RUNTIME] = rt
    app.on_response_prepare.append(send_request_id)
    app.router.add_routes(health.routes)
    app.router.add_routes(rest.routes)
    app.router.add_routes(openapi.routes)
    app.router.add_routes(rest_tokens.routes)
    app.router.add_routes(rest_jobs.routes)
    app.router.add_routes(rest_admin.routes)
    app.router.add_routes(rest_convertapi.routes)
    app.router.add_routes(rest_enconvert.routes)
    app.router.add_routes(rest_tus.routes)
    app.cleanup_ctx.append(rest_tus.sweeper)
    app.router.add_route("*", "/graphql", ConvertdGraphQLView(ide=rt.settings.introspection))
    app.router.add_routes(pages.routes)  # / (the conversion page) and /static/
    return app

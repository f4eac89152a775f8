"""The whole OpenAPI document, assembled from this package's parts, and the route table it must cover."""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web

from app.api.health import PROBE_PATHS
from app.api.openapi.account_paths import account_paths
from app.api.openapi.blocks import ref, reply
from app.api.openapi.components import ERRORS, SCHEMAS, SECURITY_SCHEMES
from app.api.openapi.job_paths import job_paths
from app.api.openapi.probe_paths import probe_paths

VERSION = "1.0"


@functools.cache
def document() -> dict[str, Any]:
    """The description, without `servers` (the request's own URL is added when served)."""
    from converters.registry import registry

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Convertd REST API",
            "version": VERSION,
            "description": "File conversion. Upload, convert, follow the job, download. The same "
            "operations are in GraphQL at /graphql; ConvertAPI's protocol is at /convertapi/.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "security": [{"ApiKeyHeader": []}, {"Bearer": []}, {"ApiKeyQuery": []}],
        "paths": {**job_paths(registry().filetypes), **account_paths(), **probe_paths()},
        "components": {
            "securitySchemes": SECURITY_SCHEMES,
            "schemas": SCHEMAS,
            "responses": {
                f"E{status}": reply(ref("Error"), description) for status, description in ERRORS.items()
            },
        },
    }


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """(METHOD, path) of every operation the document describes."""
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


def served(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path template) of every route the document must describe: /v1 and the probes."""
    out = set()
    routes = list(app.router.routes())
    # the HEAD that aiohttp adds beside each GET (same handler) is not an operation of its own
    gets = {(r.resource, r.handler) for r in routes if r.method == "GET"}
    for route in routes:
        resource = route.resource
        if resource is None or route.method == "*":
            continue
        if route.method == "HEAD" and (resource, route.handler) in gets:
            continue
        path = resource.canonical
        if path == "/v1" or path.startswith("/v1/") or path in PROBE_PATHS:
            out.add((route.method, path))
    return out

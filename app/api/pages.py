"""The pages a person opens: the conversion page at / and GraphiQL at /graphql, every asset
served from app/api/static/ (no CDN, no external font: they work on a closed network)."""

from __future__ import annotations

import functools
from pathlib import Path

from aiohttp import web
from strawberry.http.ides import get_graphql_ide_html

STATIC = Path(__file__).parent / "static"
VENDOR_PREFIX = "/static/vendor/"  # scripts/vendor_js.sh keeps unpkg's PACKAGE@VERSION/PATH layout
CDN = "https://unpkg.com/"

# the page talks only to this server; GraphiQL's template runs inline scripts and styles
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
GRAPHIQL_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "font-src 'self' data:; img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'"
)

routes = web.RouteTableDef()


@routes.get("/")
async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        STATIC / "index.html",
        headers={"Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff"},
    )


routes.static("/static", STATIC, append_version=False)


@functools.cache
def graphiql_html() -> str:
    """Strawberry's GraphiQL page with its CDN scripts and styles taken from /static/vendor/.

    The template's integrity attributes stay: the vendored files are the same bytes, and a
    Strawberry upgrade that moves to other versions fails the asset test (tests/api/test_pages.py)
    until scripts/vendor_js.sh is run with the new pins."""
    html = get_graphql_ide_html(graphql_ide="graphiql").replace(CDN, VENDOR_PREFIX)
    return html.replace("<title>Strawberry GraphiQL</title>", "<title>Convertd GraphiQL</title>")

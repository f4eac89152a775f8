"""Strawberry's aiohttp view with our hooks: authentication, streamed uploads, heartbeats."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from aiohttp import WSCloseCode, web
from cross_web import AiohttpHTTPRequestAdapter, AsyncHTTPRequestAdapter, HTTPException
from strawberry.aiohttp.views import GraphQLView
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import StartMessage
from strawberry.types.unset import UnsetType

from app.api import pages
from app.api.graphql.context import Context
from app.api.graphql.jobs.fanout import OUTLET, Outlet
from app.api.graphql.schema import schema
from app.api.multipart import read_form
from app.api.request_context import base_url, runtime
from app.auth import request as auth_request
from app.auth.authenticate import authenticate
from app.errors import ConvertdError, ErrorCode
from app.storage import IncomingFile

log = logging.getLogger(__name__)
FORM = web.RequestKey("convertd.form", object)
AUTH_ERROR = web.RequestKey("convertd.auth_error", ConvertdError)
SOCKET = web.RequestKey("convertd.websocket", web.WebSocketResponse)

# A query document, its variables and extensions; uploads are separate parts and not counted
MAX_BODY_BYTES = 256 * 1024

_MAX_CLOSE_REASON = 123  # bytes (RFC 6455: a control frame's payload, less the close code)

# Any header a browser cannot send without a CORS preflight will do (Apollo's convention).
PREFLIGHT_HEADERS = ("x-api-key", "authorization", "apollo-require-preflight", "graphql-preflight")


# Both protocol handlers start each operation in a task of its own; the task is made inside
# these calls, so it inherits where its results go (jobUpdates writes shared payloads there).
class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        token = OUTLET.set(Outlet.of("next", message))
        try:
            await super().handle_subscribe(message)
        finally:
            OUTLET.reset(token)


class WSHandler(BaseGraphQLWSHandler[Context, None]):
    async def handle_start(self, message: StartMessage) -> None:
        token = OUTLET.set(Outlet.of("data", message))
        try:
            await super().handle_start(message)
        finally:
            OUTLET.reset(token)


class ConvertdGraphQLView(GraphQLView[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = WSHandler

    def __init__(self, *, ide: bool = True) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql" if ide else None,
            multipart_uploads_enabled=True,
            # credentials never ride on cookies, so a page elsewhere gains nothing ambient
            allowed_origins=("*",),
        )

    async def render_graphql_ide(self, request: web.Request) -> web.Response:
        return web.Response(
            text=pages.graphiql_html(),
            content_type="text/html",
            headers={"Content-Security-Policy": pages.GRAPHIQL_POLICY},
        )

    async def get_context(self, request: web.Request, response: Any) -> Context:
        ctx = Context(request, response, runtime(request), base_url(request))
        if not isinstance(response, web.WebSocketResponse):
            await self._authenticate(ctx, auth_request.from_http(request, "graphql"))
            # the same rate-limit headers as REST, on the GraphQL response
            principal, error = ctx.principal_or_none, ctx.auth_error
            headers = principal.rate.headers() if principal and principal.rate else {}
            response.headers.update(error.headers if error else headers)
            if error is not None:
                request[AUTH_ERROR] = error  # an upload from a refused caller is never stored
        return ctx

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        info = auth_request.from_websocket(context.request, context.connection_params)
        context.ws_info = info
        await self._authenticate(context, info)
        err = context.auth_error
        context.rt.request_log.record(
            context.trace,
            transport="graphql-ws",
            route="connection_init",
            status=err.status if err else 200,
            error_code=err.code.value if err else None,
        )
        if err is not None:
            ws = context.request.get(SOCKET)
            if ws is not None and ws.ws_protocol == GRAPHQL_TRANSPORT_WS_PROTOCOL:
                # graphql-transport-ws has no error message for a refused connection_init,
                # only the close: its reason says why (Strawberry's own says "Forbidden")
                await ws.close(code=4403, message=_close_reason(err))
            raise ConnectionRejectionError({"message": err.message, **err.extensions}) from err
        return {"accountId": context.principal.account_id}

    async def _authenticate(self, ctx: Context, info: auth_request.RequestInfo) -> None:
        ctx.trace = info.trace
        try:
            ctx.authenticated(await authenticate(ctx.rt, info), None)
        except ConvertdError as err:
            ctx.authenticated(None, err)

    async def create_websocket_response(
        self, request: web.Request, subprotocol: str | None
    ) -> web.WebSocketResponse:
        # graphql-transport-ws never pings on its own: a heartbeat finds dead clients
        # no permessage-deflate: job updates are a few hundred bytes, and compressing each
        # frame for each subscriber costs CPU on the fan-out path
        ws = web.WebSocketResponse(
            protocols=[subprotocol] if subprotocol else [],
            heartbeat=30,
            max_msg_size=MAX_BODY_BYTES,
            compress=False,
        )
        await ws.prepare(request)
        request[SOCKET] = ws
        return ws

    async def parse_http_body(self, request: AsyncHTTPRequestAdapter) -> Any:
        """Refuse a caller without valid credentials before a byte of its document is read:
        parsing and validating is CPU on the loop every request shares, and a keyless
        caller must not be able to buy it."""
        aio_request = _aiohttp_request(request)
        if AUTH_ERROR in aio_request:
            raise aio_request[AUTH_ERROR]
        if aio_request.method == "POST" and not aio_request.content_type.startswith("multipart/"):
            length = aio_request.content_length
            if length is None or length > MAX_BODY_BYTES:
                raise ConvertdError(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    f"A GraphQL request body is limited to {MAX_BODY_BYTES // 1024} KiB"
                    + (" and must declare its Content-Length." if length is None else "."),
                    hint="Send smaller documents (fragments, variables); files go as multipart "
                    "uploads, which have their own limit.",
                )
        return await super().parse_http_body(request)

    async def parse_multipart(self, request: AsyncHTTPRequestAdapter) -> dict[str, str]:
        """The GraphQL multipart request spec, with files streamed to disk."""
        aio_request = _aiohttp_request(request)
        if not any(h in aio_request.headers for h in PREFLIGHT_HEADERS):
            raise ConvertdError(
                ErrorCode.BAD_REQUEST,
                "Multipart GraphQL requests need a non-simple header (CSRF protection).",
                hint="Send your key in X-API-Key or Authorization, or add Apollo-Require-Preflight: true.",
            )
        rt = runtime(aio_request)
        form_cm = read_form(aio_request, rt)
        form = await form_cm.__aenter__()
        # unclaimed files are removed once the whole request is answered
        aio_request[FORM] = form_cm
        operations = self.parse_json(form.get("operations") or "{}")
        mapping = self.parse_json(form.get("map") or "{}")
        files: dict[str, IncomingFile] = {name: group[-1] for name, group in form.files.items() if group}
        try:
            placed: dict[str, str] = _place_files(operations, mapping, files)  # (Strawberry's type)
            return placed
        except (KeyError, IndexError, TypeError) as exc:
            raise ConvertdError(
                ErrorCode.BAD_REQUEST,
                "The multipart 'map' does not match the request's files and variables.",
                hint="Follow the GraphQL multipart request spec: map each file part to "
                'a variable path such as "variables.file".',
            ) from exc

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        try:
            # Strawberry's own __call__ answers a malformed request in plain text; ours goes
            # through the error middleware as a GraphQL error body with a hint
            return await self.run(request=request)
        except HTTPException as exc:
            raise _malformed(exc) from exc
        except Exception:
            ws: web.WebSocketResponse | None = request.get(SOCKET)
            if ws is None:
                raise
            # after the upgrade an HTTP error page would be written into the websocket
            # stream as garbage: close the socket as a websocket does (1011)
            log.exception("websocket connection failed")
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"internal error")
            return ws
        finally:
            form_cm = request.get(FORM)
            if form_cm is not None:
                await form_cm.__aexit__(None, None, None)


# Strawberry's reasons for refusing a request before any operation runs, and what to do
_HINTS = (
    ("JSON", 'POST a JSON object {"query": "...", "variables": {...}} with Content-Type: application/json.'),
    ("No GraphQL query", 'Put the document in "query": a POST JSON body, or ?query= on a GET.'),
    ("Batching", "Send one operation per request: a JSON object, not an array."),
    ("content type", "Use Content-Type: application/json, or multipart/form-data for uploads."),
    ("mutations are not allowed", "Send mutations with POST; GET is for queries only."),
    ("`variables`", 'Send variables as a JSON object, e.g. {"id": "..."}.'),
    ("`query`", "Send the document as a string."),
    ("`extensions`", "Send extensions as a JSON object, or leave them out."),
    ("Unknown operation", "Set operationName to one of the document's operations, or leave it out."),
    ("multipart", "Follow the GraphQL multipart request spec: operations, map, then the file parts."),
    ("form data", "Follow the GraphQL multipart request spec: every file named in map must be sent."),
    (
        "GET and POST",
        "Send queries with GET or POST and mutations with POST; subscriptions go over a websocket.",
    ),
)


def _close_reason(err: ConvertdError) -> bytes:
    """ "Forbidden: <message> <hint>" within the 123 bytes a websocket close reason may hold."""
    reason = f"Forbidden: {err.message} {err.hint or ''}".strip().encode()
    if len(reason) <= _MAX_CLOSE_REASON:
        return reason
    return reason[: _MAX_CLOSE_REASON - 3].decode(errors="ignore").encode() + b"..."


def _malformed(exc: HTTPException) -> ConvertdError:
    """A request Strawberry refused before running it, as our error with a hint."""
    reason = str(exc.reason)
    hint = next((h for key, h in _HINTS if key in reason), "See the schema at GET /graphql (GraphiQL).")
    code = {405: ErrorCode.METHOD_NOT_ALLOWED, 404: ErrorCode.NOT_FOUND}.get(
        exc.status_code, ErrorCode.BAD_REQUEST
    )
    return ConvertdError(code, reason, hint)


def _aiohttp_request(request: AsyncHTTPRequestAdapter) -> web.Request:
    """The aiohttp request behind Strawberry's adapter (this view serves aiohttp only)."""
    assert isinstance(request, AiohttpHTTPRequestAdapter)
    return request.request


def _place_files(operations: Any, mapping: dict[str, list[str]], files: dict[str, Any]) -> Any:
    for name, paths in mapping.items():
        for path in paths:
            *parents, last = path.split(".")
            target = operations
            for part in parents:
                target = target[int(part)] if isinstance(target, list) else target[part]
            if isinstance(target, list):
                target[int(last)] = files[name]
            else:
                target[last] = files[name]
    return operations

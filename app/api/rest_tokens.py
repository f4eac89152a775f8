"""/v1/token routes: JWTs (ConvertAPI v2) and access tokens (ConvertAPI v1), made with an API key."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from app.api.request_context import runtime
from app.api.rest import json_body, ok, principal
from app.services import tokens

routes = web.RouteTableDef()


async def params(request: web.Request) -> dict[str, Any]:
    """Query parameters and a JSON body alike, names case-insensitive (Kid, kid, KID)."""
    merged: dict[str, Any] = {k.lower(): v for k, v in request.query.items()}
    if request.content_type == "application/json" and request.can_read_body:
        merged.update({str(k).lower(): v for k, v in (await json_body(request)).items()})
    return merged


def number(value: Any, default: int | None = None) -> Any:
    """A whole number from JSON or a query string; anything else is left for the service to refuse."""
    if value is None:
        return default
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


@routes.post("/v1/token/jwt")
@routes.post("/convertapi/token/jwt")  # the v2 document's POST https://v2.convertapi.com/token/jwt
async def create_jwt(request: web.Request) -> web.Response:
    who = await principal(request)
    p = await params(request)
    minted = await tokens.create_jwt(
        runtime(request), who, p.get("kid"), number(p.get("expiresinsec")), p.get("clientip")
    )
    return ok(
        {
            "token": minted.token,
            "kid": str(minted.kid),
            "expires_at": minted.expires_at.isoformat(),
            "client_ip": minted.client_ip,
        }
    )


@routes.post("/v1/token/create")
@routes.post("/convertapi/token/create")  # the v1 document's POST https://v2.convertapi.com/token/create
async def create_access_tokens(request: web.Request) -> web.Response:
    who = await principal(request)
    p = await params(request)
    created = await tokens.create_access_tokens(
        runtime(request),
        who,
        request_count=number(p.get("requestcount")),
        lifetime=number(p.get("lifetime")),
        count=number(p.get("count")),
    )
    return ok(
        {
            "code": 2000,  # ConvertAPI v1: token created
            "Tokens": [
                {"Id": t.token, "RequestCount": t.request_count, "ValidUntil": t.valid_until.isoformat()}
                for t in created
            ],
        }
    )


@routes.delete("/v1/token/{token}")
@routes.delete("/convertapi/token/{token}")  # and its DELETE .../token/{id}?Secret=
async def delete_access_token(request: web.Request) -> web.Response:
    who = await principal(request)
    await tokens.delete_access_token(runtime(request), who, request.match_info["token"])
    return ok({"code": 2001})  # ConvertAPI v1: token deleted

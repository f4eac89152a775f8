"""/v1/account routes: administration with the account's master token."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from app.api.request_context import runtime
from app.api.rest import json_body, ok, principal
from app.api.rest_tokens import number
from app.errors import not_found
from app.services import accounts, usage
from app.services import keys as keys_service
from app.services.accounts import Account

routes = web.RouteTableDef()


def account_body(a: Account) -> dict[str, Any]:
    plan = a.plan
    return {
        "account_id": a.id,
        "name": a.name,
        "active": a.active,
        "plan": {
            "name": plan.name,
            "api_access": plan.api_access,
            "calls_per_day": plan.calls_per_day,
            "calls_per_minute": plan.calls_per_minute,
            "max_file_size": plan.max_file_size,
            "conversions": plan.conversions,
            "max_running": plan.max_running,
        },
        "conversions_used": a.conversions_used,
        "conversions_remaining": a.conversions_remaining,
        "master_token_prefix": a.master_token_prefix,
        "master_token_created_at": a.master_token_at.isoformat() if a.master_token_at else None,
        "created_at": a.created_at.isoformat(),
    }


@routes.get("/v1/account")
async def get_account(request: web.Request) -> web.Response:
    return ok({"account": account_body(await accounts.account(runtime(request), await principal(request)))})


@routes.get("/v1/account/consumption")
async def consumption(request: web.Request) -> web.Response:
    c = await accounts.consumption(runtime(request), await principal(request))
    return ok(
        {
            "conversions_used": c.account.conversions_used,
            "conversions_limit": c.account.plan.conversions,
            "conversions_remaining": c.account.conversions_remaining,
            "rate_limits": c.rate_limits.body(),
            "keys": [k.public() for k in c.keys],
        }
    )


@routes.get("/v1/account/statistics")
async def statistics(request: web.Request) -> web.Response:
    who = await principal(request)
    s = await usage.statistics(runtime(request), who, number(request.query.get("days"), 30))
    return ok(
        {
            "since": s.since.isoformat(),
            "days": [{**vars(d), "day": d.day.isoformat()} for d in s.days],
            "conversions": [vars(c) for c in s.conversions],
        }
    )


@routes.get("/v1/account/requests")
async def request_log(request: web.Request) -> web.Response:
    who = await principal(request)
    page = await usage.request_log(
        runtime(request),
        who,
        first=number(request.query.get("first"), usage.REQUEST_LOG_PAGE),
        after=request.query.get("after"),
    )
    return ok(
        {
            "requests": [{**vars(e), "at": e.at.isoformat()} for e in page.entries],
            "next_cursor": page.next_cursor,
        }
    )


@routes.get("/v1/account/keys")
async def list_keys(request: web.Request) -> web.Response:
    who = await principal(request)
    return ok(
        {"keys": [k.public() for k in await keys_service.account_keys(runtime(request), who.account_id)]}
    )


@routes.post("/v1/account/keys")
async def create_key(request: web.Request) -> web.Response:
    who = await principal(request)
    body = await json_body(request)
    spec = keys_service.KeySpec(
        name=str(body.get("name") or ""),
        **{f: body[f] for f in keys_service.CREATE_FIELDS if body.get(f) is not None},
    )
    rt = runtime(request)
    created = await keys_service.create_key(rt.pool, who.account_id, spec, server_secret=rt.settings.secret)
    secrets = {"signing_secret": created.signing_secret, "webhook_secret": created.webhook_secret}
    return ok({**created.key.public(), "key": created.secret, **secrets}, status=201)


@routes.patch("/v1/account/keys/{key_id}")
async def update_key(request: web.Request) -> web.Response:
    who = await principal(request)
    body = await json_body(request)
    changes = {f: body[f] for f in keys_service.EDITABLE_FIELDS if f in body}
    key = await keys_service.update_key(runtime(request).pool, who.account_id, _key_id(request), **changes)
    return ok(key.public())


@routes.delete("/v1/account/keys/{key_id}")
async def revoke_key(request: web.Request) -> web.Response:
    who = await principal(request)
    key = await keys_service.revoke_key(runtime(request).pool, who.account_id, _key_id(request))
    return ok(key.public())


@routes.post("/v1/account/keys/{key_id}/rotate")
async def rotate_key_secret(request: web.Request) -> web.Response:
    """{"secret": "jwt" | "webhook"}: the key's new secret of that kind, shown once."""
    who = await principal(request)
    body = await json_body(request)
    rt = runtime(request)
    which = str(body.get("secret") or "")
    key, secret = await keys_service.rotate_secret(
        rt.pool, who.account_id, _key_id(request), which, rt.settings.secret
    )
    return ok({**key.public(), "rotated": which, "secret": secret})


@routes.post("/v1/account/master-token")
async def refresh_master_token(request: web.Request) -> web.Response:
    token = await accounts.refresh_master_token(runtime(request), await principal(request))
    return ok({"master_token": token})


def _key_id(request: web.Request) -> int:
    raw = request.match_info["key_id"]
    if not raw.isdigit():
        raise not_found("Key")
    return int(raw)

"""One path from RequestInfo to Principal for REST, GraphQL over HTTP and over websocket.

In order: who is calling (401), the key's restrictions (403), the operation for REST (403;
GraphQL checks its root fields after parsing, in app/api/graphql/access.py), the plan's API
access (403), then the rate limit (429) and the access token's request count. Refused calls
spend nothing.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from app.auth import jwts, keys, operations, ratelimit, restrictions
from app.auth.network import client_address
from app.auth.principal import Principal
from app.errors import ConvertdError, CredentialCode, ErrorCode
from app.models import ApiKey, Plan

if TYPE_CHECKING:
    from app.auth.network import Address
    from app.auth.request import RequestInfo
    from app.runtime import Runtime

_KEY_SELECT = """
SELECT k.*, a.name AS account_name, a.active, p.name AS plan_name, p.api_access,
       p.calls_per_day, p.calls_per_minute, p.max_file_size, p.conversions,
       p.retention, p.storage_quota, p.max_pending, p.max_running
FROM api_keys k JOIN accounts a ON a.id = k.account_id JOIN plans p ON p.name = a.plan
"""
_TOKEN_QUERY = """
SELECT t.id AS token_id, t.requests_left, t.valid_until, t.valid_until <= now() AS expired
FROM access_tokens t WHERE t.token_hash = $1
"""
_MASTER_QUERY = """
SELECT a.id AS account_id, a.name AS account_name, a.active, p.name AS plan_name, p.api_access,
       p.calls_per_day, p.calls_per_minute, p.max_file_size, p.conversions,
       p.retention, p.storage_quota, p.max_pending, p.max_running
FROM accounts a JOIN plans p ON p.name = a.plan WHERE a.master_token_hash = $1
"""
# administration is not metered by the plan, but a leaked master token must not flood us
ADMIN_CALLS_PER_MINUTE = 120


def unauthenticated(message: str, hint: str, legacy_code: CredentialCode) -> ConvertdError:
    return ConvertdError(ErrorCode.UNAUTHENTICATED, message, hint, legacy_code=legacy_code)


def _plan(row: Any) -> Plan:
    return Plan.from_row(row, "plan_name")


def _from_key_row(row: Any, method: Any, client_ip: Address | None, legacy_code: CredentialCode) -> Principal:
    if row["revoked_at"] is not None:
        raise unauthenticated(
            "The API key has been revoked.", "Create a new key and use it instead.", legacy_code
        )
    if not row["active"]:
        raise unauthenticated(
            "The account is inactive.",
            "Ask the operator to reactivate the account.",
            CredentialCode.ACCOUNT_INACTIVE,
        )
    return Principal(
        account_id=row["account_id"],
        account_name=row["account_name"],
        plan=_plan(row),
        method=method,
        key=ApiKey.from_row(row),
        client_ip=str(client_ip) if client_ip else None,
    )


async def _key_row(rt: Runtime, where: str, value: Any) -> Any:
    """The key with its account and plan, from the auth cache when it is there."""
    cache = rt.auth_cache
    if cache is None:
        return await rt.pool.fetchrow(_KEY_SELECT + where, value)
    row = cache.get((where, value))
    if row is None:
        generation = cache.generation
        row = await rt.pool.fetchrow(_KEY_SELECT + where, value)
        if row is not None:
            cache.put((where, value), row, generation)
    return row


async def _api_key(rt: Runtime, credential: str, client_ip: Address | None) -> Principal:
    row = await _key_row(rt, " WHERE k.key_hash = $1", keys.digest(credential))
    if row is None or not keys.matches(credential, row["key_hash"]):
        raise unauthenticated(
            "The API key is not valid.",
            "Check that the key is complete and has not been revoked.",
            CredentialCode.INVALID_KEY,
        )
    return _from_key_row(row, "api_key", client_ip, CredentialCode.INVALID_KEY)


async def _jwt(rt: Runtime, token: str, client_ip: Address | None) -> Principal:
    kid = jwts.kid_of(token)
    row = await _key_row(rt, " WHERE k.kid = $1", kid)
    if row is None:
        raise jwts.unknown_kid(str(kid))
    secret = keys.signing_secret(rt.settings.secret, kid, row["jwt_secret_version"])
    jwts.verify(token, secret, client_ip, max_lifetime=rt.settings.jwt_max_lifetime)
    if row["revoked_at"] is not None:
        raise jwts.refused("The key named by the JWT's kid has been revoked.", "Use a token of a live key.")
    return _from_key_row(row, "jwt", client_ip, CredentialCode.INVALID_JWT)


async def _access_token(rt: Runtime, token: str, client_ip: Address | None) -> Principal:
    found = await rt.pool.fetchrow(_TOKEN_QUERY, keys.digest(token))
    hint = "Create a new token with POST /v1/token/create (or createAccessTokens)."
    if found is None:
        raise unauthenticated(
            "The access token is not valid (unknown or deleted).", hint, CredentialCode.INVALID_ACCESS_TOKEN
        )
    if found["expired"]:
        raise unauthenticated("The access token has expired.", hint, CredentialCode.INVALID_ACCESS_TOKEN)
    if found["requests_left"] <= 0:
        raise unauthenticated(
            "The access token has no requests left.", hint, CredentialCode.INVALID_ACCESS_TOKEN
        )
    row = await rt.pool.fetchrow(
        _KEY_SELECT + " JOIN access_tokens t ON t.api_key_id = k.id WHERE t.id = $1", found["token_id"]
    )
    principal = _from_key_row(row, "access_token", client_ip, CredentialCode.INVALID_ACCESS_TOKEN)
    return dataclasses.replace(principal, access_token_id=found["token_id"])


async def _master(rt: Runtime, token: str, client_ip: Address | None) -> Principal:
    row = await rt.pool.fetchrow(_MASTER_QUERY, keys.digest(token))
    if row is None:
        raise unauthenticated(
            "The master token is not valid.",
            "It may have been refreshed; a refresh invalidates the previous token at once.",
            CredentialCode.INVALID_KEY,
        )
    if not row["active"]:
        raise unauthenticated(
            "The account is inactive.",
            "Ask the operator to reactivate the account.",
            CredentialCode.ACCOUNT_INACTIVE,
        )
    return Principal(
        account_id=row["account_id"],
        account_name=row["account_name"],
        plan=_plan(row),
        method="master",
        client_ip=str(client_ip) if client_ip else None,
    )


async def identify(rt: Runtime, credential: str | None, client_ip: Address | None) -> Principal:
    """Who the credential belongs to, whatever its kind, or 401."""
    if not credential:
        raise unauthenticated(
            "No API key was sent.",
            "Send your key as the X-API-Key header, as Authorization: Bearer <key>, "
            "or as ?api_key=<key>; create one with `convertd keys create --name NAME`.",
            CredentialCode.MISSING,
        )
    if credential.startswith(keys.MASTER_PREFIX):
        return await _master(rt, credential, client_ip)
    if credential.startswith(keys.ACCESS_TOKEN_PREFIX):
        return await _access_token(rt, credential, client_ip)
    if jwts.looks_like_jwt(credential):
        return await _jwt(rt, credential, client_ip)
    return await _api_key(rt, credential, client_ip)


def check_plan(principal: Principal) -> None:
    if principal.method != "master" and not principal.plan.api_access:
        raise ConvertdError(
            ErrorCode.FORBIDDEN,
            f"API access is not enabled on the {principal.plan.name} plan.",
            "Upgrade to a plan with API access (Basic or Pro); the operator changes plans "
            "with `convertd plans` and the account's plan.",
        )


async def limit(rt: Runtime, principal: Principal, cost: int = 1) -> ratelimit.RateState:
    """Count `cost` calls against the caller's rate limits, or refuse with 429."""
    if principal.method == "master":
        scope, per_minute, per_day = f"admin:{principal.account_id}", ADMIN_CALLS_PER_MINUTE, None
    else:
        plan = principal.plan
        scope, per_minute, per_day = (
            f"account:{principal.account_id}",
            plan.calls_per_minute,
            plan.calls_per_day,
        )
    state = await ratelimit.hit(rt.redis, scope, per_minute, per_day, cost=cost)
    if state.refused:
        per = "minute" if state.refused == "minute" else "day"
        window = state.minute if per == "minute" else state.day
        what = "administrative calls" if principal.method == "master" else "calls"
        whose = "" if principal.method == "master" else f" on the {principal.plan.name} plan"
        raise ConvertdError(
            ErrorCode.RATE_LIMITED,
            f"Rate limit reached: {window.limit} {what} per {per}{whose}.",
            f"Retry after {state.retry_after} s"
            + (" (daily counters reset at midnight UTC)." if per == "day" else ".")
            + " GET /v1/keys/me shows your remaining quota."
            + (f" This request counts as {cost} calls (one per root field)." if cost > 1 else ""),
            headers=state.headers(),
        )
    return state


async def charge(rt: Runtime, principal: Principal) -> Principal:
    """Count the call against the rate limits, then spend one request of an access token."""
    state = await limit(rt, principal)
    if principal.access_token_id is not None:
        left = await rt.pool.fetchval(
            "UPDATE access_tokens SET requests_left = requests_left - 1"
            " WHERE id = $1 AND requests_left > 0 AND valid_until > now() RETURNING requests_left",
            principal.access_token_id,
        )
        if left is None:
            raise unauthenticated(
                "The access token has no requests left.",
                "Create a new token with POST /v1/token/create (or createAccessTokens).",
                CredentialCode.INVALID_ACCESS_TOKEN,
            )
    key = principal.key
    if key is None:
        return dataclasses.replace(principal, rate=state)
    # The call is counted on the key in the same trip that reads the key, its account and
    # its plan as they are now: an answer from the auth cache that is no longer true (the
    # notification of a change not yet heard) is caught here, on the very next call.
    row = await rt.pool.fetchrow(_CHARGE_KEY, key.id)
    legacy = _LEGACY_CODES[principal.method]
    if row is None:  # deleted with its account meanwhile
        raise unauthenticated("The API key is not valid.", "Create a new key and use it instead.", legacy)
    fresh = _from_key_row(row, principal.method, None, legacy)
    if _decisive(fresh) != _decisive(principal):
        if rt.auth_cache is not None:
            rt.auth_cache.clear()
        raise _Stale(dataclasses.replace(fresh, rate=state))
    return dataclasses.replace(principal, key=fresh.key, rate=state)


_CHARGE_KEY = """
UPDATE api_keys k SET usage_count = k.usage_count + 1, last_used_at = now()
FROM accounts a JOIN plans p ON p.name = a.plan
WHERE k.id = $1 AND a.id = k.account_id
RETURNING k.*, a.name AS account_name, a.active, p.name AS plan_name, p.api_access,
          p.calls_per_day, p.calls_per_minute, p.max_file_size, p.conversions,
       p.retention, p.storage_quota, p.max_pending, p.max_running
"""
_LEGACY_CODES = {
    "api_key": CredentialCode.INVALID_KEY,
    "jwt": CredentialCode.INVALID_JWT,
    "access_token": CredentialCode.INVALID_ACCESS_TOKEN,
    "master": CredentialCode.INVALID_KEY,
}


def _decisive(principal: Principal) -> tuple[object, ...]:
    """What admission depends on: all but the key's counters."""
    key = principal.key
    assert key is not None
    key = dataclasses.replace(key, usage_count=0, last_used_at=None, conversions_used=0)
    return (key, principal.account_id, principal.account_name, principal.plan)


class _Stale(Exception):
    """The key, its account or its plan changed since the cached answer was read."""

    def __init__(self, fresh: Principal) -> None:
        super().__init__("stale")
        self.fresh = fresh


def _admit(principal: Principal, info: RequestInfo, client_ip: Address | None) -> None:
    restrictions.check(principal, info, client_ip)
    if info.endpoint != "graphql":
        operations.require(principal, operations.for_route(info.endpoint))
    check_plan(principal)


async def authenticate(rt: Runtime, info: RequestInfo) -> Principal:
    client_ip = client_address(info.peer, info.headers, rt.settings.trusted_proxies)
    info.trace.client_ip = str(client_ip) if client_ip else None
    if info.in_url and info.credential and info.credential.startswith(keys.MASTER_PREFIX):
        raise unauthenticated(
            "The master token is never accepted in a URL.",
            "Send it as Authorization: Bearer <token>: URLs end up in proxy and server logs.",
            CredentialCode.INVALID_KEY,
        )
    principal = await identify(rt, info.credential, client_ip)
    info.trace.account_id = principal.account_id
    info.trace.api_key_id = principal.key.id if principal.key else None
    info.trace.credential = principal.method
    _admit(principal, info, client_ip)
    try:
        return await charge(rt, principal)
    except _Stale as stale:
        # admitted on what was true a moment ago: decide again on what is true now (this
        # call was counted once already, and stays counted)
        fresh = dataclasses.replace(
            stale.fresh,
            client_ip=principal.client_ip,
            access_token_id=principal.access_token_id,
        )
        _admit(fresh, info, client_ip)
        return fresh

"""One path from RequestInfo to Principal for REST, GraphQL over HTTP and over websocket.

In order: who is calling (401), the key's restrictions (403), the operation for REST (403;
GraphQL checks its root fields after parsing, in app/api/graphql/access.py), the plan's API
access (403), then the rate limit (429) and the access token's request count. Refused calls
spend nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

from app.auth import crypto, jwts, operations, ratelimit, restrictions
from app.auth.network import client_address
from app.auth.principal import Principal
from app.errors import ConvertdError, CredentialCode, ErrorCode
from app.services import credentials
from app.services.credentials import KeyHolder

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from app.auth.network import Address
    from app.auth.principal import Method
    from app.auth.request import RequestInfo
    from app.db import Executor
    from app.runtime import Runtime

# administration is not metered by the plan, but a leaked master token must not flood us
ADMIN_CALLS_PER_MINUTE = 120
# "Check GET /v1/keys/me at any time to see your remaining quota" (the SkyConvert document):
# counted like every call while the limits have room, answered uncounted once they have none
ANSWERED_OVER_THE_LIMIT = frozenset({"/v1/keys/me"})


def unauthenticated(message: str, hint: str, legacy_code: CredentialCode) -> ConvertdError:
    return ConvertdError(ErrorCode.UNAUTHENTICATED, message, hint, legacy_code=legacy_code)


def _from_holder(
    found: KeyHolder, method: Method, client_ip: Address | None, legacy_code: CredentialCode
) -> Principal:
    if found.key.revoked_at is not None:
        raise unauthenticated(
            "The API key has been revoked.", "Create a new key and use it instead.", legacy_code
        )
    if not found.account_active:
        raise unauthenticated(
            "The account is inactive.",
            "Ask the operator to reactivate the account.",
            CredentialCode.ACCOUNT_INACTIVE,
        )
    return Principal(
        account_id=found.key.account_id,
        account_name=found.account_name,
        plan=found.plan,
        method=method,
        key=found.key,
        client_ip=str(client_ip) if client_ip else None,
    )


async def _cached(
    rt: Runtime, lookup: Callable[[Executor, Any], Awaitable[KeyHolder | None]], value: Any
) -> KeyHolder | None:
    """The key with its account and plan from the service, or from the auth cache when it
    holds the answer (charge() checks the cached answer against the database)."""
    cache = rt.auth_cache
    if cache is None:
        return await lookup(rt.pool, value)
    found: KeyHolder | None = cache.get((lookup.__name__, value))
    if found is None:
        generation = cache.generation
        found = await lookup(rt.pool, value)
        if found is not None:
            cache.put((lookup.__name__, value), found, generation)
    return found


async def _api_key(rt: Runtime, credential: str, client_ip: Address | None) -> Principal:
    found = await _cached(rt, credentials.key_by_digest, crypto.digest(credential))
    if found is None or not crypto.matches(credential, found.key_hash):
        raise unauthenticated(
            "The API key is not valid.",
            "Check that the key is complete and has not been revoked.",
            CredentialCode.INVALID_KEY,
        )
    return _from_holder(found, "api_key", client_ip, CredentialCode.INVALID_KEY)


async def _jwt(rt: Runtime, token: str, client_ip: Address | None) -> Principal:
    kid = jwts.kid_of(token)
    found = await _cached(rt, credentials.key_by_kid, kid)
    if found is None:
        raise jwts.unknown_kid(str(kid))
    secret = crypto.signing_secret(rt.settings.secret, kid, found.key.jwt_secret_version)
    claims = jwts.verify(token, secret, client_ip, max_lifetime=rt.settings.jwt_max_lifetime)
    if found.key.revoked_at is not None:
        raise jwts.refused("The key named by the JWT's kid has been revoked.", "Use a token of a live key.")
    principal = _from_holder(found, "jwt", client_ip, CredentialCode.INVALID_JWT)
    if claims.get("RequestCount") is None:
        return principal
    return dataclasses.replace(principal, jwt_claims=claims)


async def _access_token(rt: Runtime, token: str, client_ip: Address | None) -> Principal:
    found = await credentials.access_token(rt.pool, crypto.digest(token))
    hint = "Create a new token with POST /v1/token/create (or createAccessTokens)."
    if found is None:
        raise unauthenticated(
            "The access token is not valid (unknown or deleted).", hint, CredentialCode.INVALID_ACCESS_TOKEN
        )
    if found.expired:
        raise unauthenticated("The access token has expired.", hint, CredentialCode.INVALID_ACCESS_TOKEN)
    if found.requests_left <= 0:
        raise unauthenticated(
            "The access token has no requests left.", hint, CredentialCode.INVALID_ACCESS_TOKEN
        )
    holder = await credentials.key_of_access_token(rt.pool, found.id)
    if holder is None:  # deleted with its key meanwhile
        raise unauthenticated(
            "The access token is not valid (unknown or deleted).", hint, CredentialCode.INVALID_ACCESS_TOKEN
        )
    principal = _from_holder(holder, "access_token", client_ip, CredentialCode.INVALID_ACCESS_TOKEN)
    return dataclasses.replace(principal, access_token_id=found.id)


async def _master(rt: Runtime, token: str, client_ip: Address | None) -> Principal:
    found = await credentials.master_account(rt.pool, crypto.digest(token))
    if found is None:
        raise unauthenticated(
            "The master token is not valid.",
            "It may have been refreshed; a refresh invalidates the previous token at once.",
            CredentialCode.INVALID_KEY,
        )
    if not found.active:
        raise unauthenticated(
            "The account is inactive.",
            "Ask the operator to reactivate the account.",
            CredentialCode.ACCOUNT_INACTIVE,
        )
    return Principal(
        account_id=found.account_id,
        account_name=found.account_name,
        plan=found.plan,
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
    if credential.startswith(crypto.MASTER_PREFIX):
        return await _master(rt, credential, client_ip)
    if credential.startswith(crypto.ACCESS_TOKEN_PREFIX):
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


def _windows(principal: Principal) -> tuple[str, int | None, int | None]:
    """The rate-limit scope of the caller, and its per-minute and per-day limits."""
    if principal.method == "master":
        return f"admin:{principal.account_id}", ADMIN_CALLS_PER_MINUTE, None
    plan = principal.plan
    return f"account:{principal.account_id}", plan.calls_per_minute, plan.calls_per_day


async def limit(rt: Runtime, principal: Principal, cost: int = 1) -> ratelimit.RateState:
    """Count `cost` calls against the caller's rate limits, or refuse with 429."""
    state = await ratelimit.hit(rt.redis, *_windows(principal), cost=cost)
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
            + " GET /v1/keys/me shows the quota at any time, as do the X-RateLimit-Limit,"
            + " X-RateLimit-Remaining and X-RateLimit-Reset headers of every answer."
            + (f" This request counts as {cost} calls (one per root field)." if cost > 1 else ""),
            headers=state.headers(),
        )
    return state


async def charge(rt: Runtime, principal: Principal) -> Principal:
    """Count the call against the rate limits, then spend one request of an access token
    or of a ConvertAPI v1 JWT with a RequestCount."""
    key = principal.key
    if key is None:
        state = await limit(rt, principal)
        now = None
    else:
        # the count (Redis) and the key's fresh read (PostgreSQL) at once: one wait, not two;
        # both are awaited to the end, and a refusal of the count comes first
        counted, read = await asyncio.gather(
            limit(rt, principal), credentials.key_now(rt.pool, key.id), return_exceptions=True
        )
        if isinstance(counted, BaseException):
            raise counted
        if isinstance(read, BaseException):
            raise read
        state, now = counted, read
    if principal.access_token_id is not None:
        left = await credentials.spend_token_request(rt.pool, principal.access_token_id)
        if left is None:
            raise unauthenticated(
                "The access token has no requests left.",
                "Create a new token with POST /v1/token/create (or createAccessTokens).",
                CredentialCode.INVALID_ACCESS_TOKEN,
            )
    claims = principal.jwt_claims
    if claims is not None and key is not None and not await jwts.spend(rt.redis, key.kid, claims):
        raise jwts.refused(
            "The JWT has no requests left (its RequestCount is used up).",
            "Sign a new token with a new Id, or use one without a RequestCount.",
        )
    if key is None:
        return dataclasses.replace(principal, rate=state)
    # The key, its account and its plan are read as they are now (above): an answer from
    # the auth cache that is no longer true (the notification of a change not yet heard) is
    # caught here, on the very next call. The call is counted in memory and written in
    # batches (app/services/key_calls.py): no write, and no row lock shared by one key's callers.
    legacy = _LEGACY_CODES[principal.method]
    if now is None:  # deleted with its account meanwhile
        raise unauthenticated("The API key is not valid.", "Create a new key and use it instead.", legacy)
    fresh = _from_holder(now, principal.method, None, legacy)  # (refused calls spend nothing)
    rt.key_calls.record(key.id)
    if _decisive(fresh) != _decisive(principal):
        if rt.auth_cache is not None:
            rt.auth_cache.clear()
        raise _Stale(dataclasses.replace(fresh, rate=state))
    return dataclasses.replace(principal, key=fresh.key, rate=state)


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
        operations.require(principal, operations.for_route(info.endpoint), path=info.path)
    check_plan(principal)


async def authenticate(rt: Runtime, info: RequestInfo) -> Principal:
    client_ip = client_address(info.peer, info.headers, rt.settings.trusted_proxies)
    info.trace.client_ip = str(client_ip) if client_ip else None
    if info.in_url and info.credential and info.credential.startswith(crypto.MASTER_PREFIX):
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
    except ConvertdError as exc:
        if exc.code is not ErrorCode.RATE_LIMITED or info.path not in ANSWERED_OVER_THE_LIMIT:
            raise
        # answered, not counted: the windows as they stand (0 remaining) are what it shows
        return dataclasses.replace(principal, rate=await ratelimit.peek(rt.redis, *_windows(principal)))
    except _Stale as stale:
        # admitted on what was true a moment ago: identify and decide again on what is true
        # now, from the database (charge() cleared the cache). Identify too, not only admit:
        # a JWT signed with a secret rotated meanwhile fails its signature check there. This
        # call was counted once already, and stays counted.
        fresh = await identify(rt, info.credential, client_ip)
        fresh = dataclasses.replace(fresh, rate=stale.fresh.rate)
        _admit(fresh, info, client_ip)
        return fresh

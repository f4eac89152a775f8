"""Accounts and API keys: create, list, change, revoke. Restrictions are validated here."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from app.auth import crypto
from app.auth.network import parse_network
from app.auth.restrictions import RESTRICTION_TYPES, host_of
from app.db import Conn, Executor
from app.errors import ConvertdError, ErrorCode, not_found
from app.models import ApiKey, Plan
from app.services import quota

if TYPE_CHECKING:
    import asyncpg

    from app.auth.principal import Principal
    from app.runtime import Runtime

DEFAULT_PLAN = "pro"  # self-hosted: the operator's own keys are unlimited unless told otherwise
_DOMAIN = re.compile(r"^(\*\.)?([a-z0-9_]([a-z0-9_-]*[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$")
_FIELD = re.compile(r"^([A-Za-z_]\w*\.)?[A-Za-z_]\w*$")


class _Keep:
    """A change that leaves a value as it is (None is a value: 'no limit')."""


KEEP: Any = _Keep()


@dataclasses.dataclass(frozen=True)
class KeySpec:
    """What a key may do. restriction_type None: 'ip' with addresses, 'domain' with domains, else 'all'."""

    name: str
    environment: str = "live"
    restriction_type: str | None = None
    allowed_ips: Sequence[str] = ()
    allowed_domains: Sequence[str] = ()
    allowed_endpoints: Sequence[str] = ()
    conversion_limit: int | None = None


# What a key's owner may change after creation (PATCH /v1/account/keys/{id}, updateKey).
# Not its environment: the key's secret starts with it (sk_live_, sk_test_), so a key keeps
# it for life; update_key refuses a different one with a hint.
EDITABLE_FIELDS = (
    "name",
    "environment",  # accepted only unchanged, see update_key
    "restriction_type",
    "allowed_ips",
    "allowed_domains",
    "allowed_endpoints",
    "conversion_limit",
)
CREATE_FIELDS = tuple(f.name for f in dataclasses.fields(KeySpec) if f.name != "name")


@dataclasses.dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    secret: str  # the key itself, shown once
    signing_secret: str | None  # for self-signed JWTs, shown once (derived, never stored)
    webhook_secret: str | None = None  # verifies its webhook deliveries, shown once


def bad(message: str, hint: str, field: str) -> ConvertdError:
    return ConvertdError(ErrorCode.BAD_REQUEST, message, hint, field=field)


def _texts(values: Any, field: str) -> list[str]:
    """A list of strings from a JSON body, or 400 (the validators below read strings)."""
    if values is None:
        return []
    if isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise bad(f"'{field}' must be a list of strings.", f'e.g. "{field}": ["..."]', field)
    return list(values)


def _text(value: Any, field: str) -> Any:
    if value is not None and not isinstance(value, str):
        raise bad(f"'{field}' must be a string.", "Send it as a JSON string.", field)
    return value


def _name(name: str) -> str:
    name = (_text(name, "name") or "").strip()
    if not name or len(name) > 200:
        raise bad("A key needs a name of 1 to 200 characters.", "e.g. --name 'My Production Key'", "name")
    return name


def _ips(values: Sequence[str]) -> list[str]:
    out = []
    for value in _texts(values, "allowed_ips"):
        try:
            out.append(str(parse_network(value)))
        except ValueError as exc:
            raise bad(
                f"'{value}' is not an IP address or CIDR block.",
                "Give IPv4 or IPv6 addresses (203.0.113.5, 2001:db8::1) or blocks (203.0.113.0/24).",
                "allowed_ips",
            ) from exc
    return out


def _domains(values: Sequence[str]) -> list[str]:
    out = []
    for value in _texts(values, "allowed_domains"):
        text = value.strip().lower()
        wildcard = text.startswith("*.")
        host = host_of(text[2:] if wildcard else text)
        domain = f"*.{host}" if wildcard and host else host
        if not domain or not _DOMAIN.match(domain):
            raise bad(
                f"'{value}' is not a domain.",
                "Give host names such as example.com, or *.example.com for all its subdomains.",
                "allowed_domains",
            )
        out.append(domain)
    return out


def _endpoints(values: Sequence[str]) -> list[str]:
    out = []
    for value in _texts(values, "allowed_endpoints"):
        text = value.strip()
        if not (text.startswith(("/v1/", "/convertapi/")) or _FIELD.match(text)):
            raise bad(
                f"'{value}' is neither a REST path nor a GraphQL field.",
                "Give paths such as /v1/convert or GraphQL root fields such as convert or jobUpdates.",
                "allowed_endpoints",
            )
        out.append(text)
    return out


def _restriction(kind: str | None, ips: list[str], domains: list[str]) -> str:
    kind = _text(kind, "restriction_type")
    if kind is None:
        if ips and domains:
            raise bad(
                "A key is restricted either by IP or by domain, not both.",
                "Create two keys, one for servers (IP) and one for your site (domain).",
                "restriction_type",
            )
        return "ip" if ips else "domain" if domains else "all"
    if kind not in RESTRICTION_TYPES:
        raise bad(f"Unknown restriction type '{kind}'.", "One of: all, ip, domain.", "restriction_type")
    if kind == "ip" and not ips:
        raise bad("An IP-restricted key needs allowed IPs.", "Give at least one address.", "allowed_ips")
    if kind == "domain" and not domains:
        raise bad(
            "A domain-restricted key needs allowed domains.", "Give at least one domain.", "allowed_domains"
        )
    return kind


def _conversion_limit(value: int | None) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise bad(
            "The conversion limit must be a whole number.", "Give 0 or more, or null.", "conversion_limit"
        )
    if value is not None and value < 0:
        raise bad("The conversion limit cannot be negative.", "Give 0 or more, or none.", "conversion_limit")
    return value


def _environment(value: str) -> str:
    if not isinstance(value, str) or value not in crypto.ENVIRONMENTS:
        raise bad(f"Unknown environment '{value}'.", "One of: live, test.", "environment")
    return value


async def _check_plan(conn: Conn, plan: str) -> None:
    if not await conn.fetchval("SELECT 1 FROM plans WHERE name = $1", plan):
        names = [r["name"] for r in await conn.fetch("SELECT name FROM plans ORDER BY name")]
        raise ConvertdError(ErrorCode.BAD_REQUEST, f"Unknown plan '{plan}'.", f"Plans: {', '.join(names)}.")


async def create_account_with_key(
    pool: asyncpg.Pool,
    name: str,
    *,
    plan: str = DEFAULT_PLAN,
    environment: str = "live",
    spec: KeySpec | None = None,
    server_secret: str | None = None,
) -> CreatedKey:
    spec = spec or KeySpec(name=name, environment=environment)
    async with pool.acquire() as conn, conn.transaction():
        await _check_plan(conn, plan)
        account_id = await conn.fetchval(
            "INSERT INTO accounts (name, plan) VALUES ($1, $2) RETURNING id", name, plan
        )
        return await _insert_key(conn, account_id, spec, server_secret)


async def create_key(
    pool: Executor, account_id: int, spec: KeySpec, *, server_secret: str | None
) -> CreatedKey:
    if not await pool.fetchval("SELECT 1 FROM accounts WHERE id = $1", account_id):
        raise not_found("Account")
    return await _insert_key(pool, account_id, spec, server_secret)


async def _insert_key(
    conn: Executor, account_id: int, spec: KeySpec, server_secret: str | None
) -> CreatedKey:
    ips, domains = _ips(spec.allowed_ips), _domains(spec.allowed_domains)
    environment = _environment(spec.environment)
    secret = crypto.generate(environment)
    row = await conn.fetchrow(
        "INSERT INTO api_keys (account_id, name, prefix, key_hash, environment, restriction_type,"
        " allowed_ips, allowed_domains, allowed_endpoints, conversion_limit)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *",
        account_id,
        _name(spec.name),
        crypto.prefix(secret),
        crypto.digest(secret),
        environment,
        _restriction(spec.restriction_type, ips, domains),
        ips,
        domains,
        _endpoints(spec.allowed_endpoints),
        _conversion_limit(spec.conversion_limit),
    )
    key = ApiKey.from_row(row)
    signing = crypto.signing_secret(server_secret, key.kid) if server_secret else None
    hooks = crypto.webhook_secret(server_secret, key.kid) if server_secret else None
    return CreatedKey(key, secret, signing, hooks)


async def list_keys(pool: asyncpg.Pool, account_id: int | None = None) -> list[ApiKey]:
    """An account's keys (every key when account_id is None: the operator's view), oldest first."""
    rows = await pool.fetch(
        "SELECT * FROM api_keys WHERE $1::bigint IS NULL OR account_id = $1 ORDER BY id", account_id
    )
    return [ApiKey.from_row(r) for r in rows]


async def account_keys(rt: Runtime, account_id: int) -> list[ApiKey]:
    """An account's keys with every call counted so far in this process included."""
    await rt.key_calls.flush()
    return await list_keys(rt.pool, account_id)


async def _get(pool: asyncpg.Pool, account_id: int | None, key_id: int) -> ApiKey:
    row = await pool.fetchrow(
        "SELECT * FROM api_keys WHERE id = $1 AND ($2::bigint IS NULL OR account_id = $2)", key_id, account_id
    )
    if row is None:
        raise not_found("Key")
    return ApiKey.from_row(row)


async def update_key(
    pool: asyncpg.Pool,
    account_id: int | None,
    key_id: int,
    *,
    name: str = KEEP,
    environment: str = KEEP,
    restriction_type: str | None = KEEP,
    allowed_ips: Sequence[str] = KEEP,
    allowed_domains: Sequence[str] = KEEP,
    allowed_endpoints: Sequence[str] = KEEP,
    conversion_limit: int | None = KEEP,
) -> ApiKey:
    """Change what is given; the result is validated as a whole, as at creation."""
    key = await _get(pool, account_id, key_id)
    if environment is not KEEP and environment != key.environment:
        raise ConvertdError(
            ErrorCode.BAD_REQUEST,
            f"A key's environment cannot change (this key is {key.environment}).",
            hint=f"Create a new key with environment '{environment}' and revoke this one.",
            field="environment",
        )

    def pick(new: Any, old: Any) -> Any:
        return old if new is KEEP else new

    ips = _ips(pick(allowed_ips, key.allowed_ips))
    domains = _domains(pick(allowed_domains, key.allowed_domains))
    changed_lists = allowed_ips is not KEEP or allowed_domains is not KEEP
    kind = pick(restriction_type, None if changed_lists else key.restriction_type)
    row = await pool.fetchrow(
        "UPDATE api_keys SET name = $2, restriction_type = $3, allowed_ips = $4, allowed_domains = $5,"
        " allowed_endpoints = $6, conversion_limit = $7 WHERE id = $1 RETURNING *",
        key.id,
        _name(pick(name, key.name)),
        _restriction(kind, ips, domains),
        ips,
        domains,
        _endpoints(pick(allowed_endpoints, key.allowed_endpoints)),
        _conversion_limit(pick(conversion_limit, key.conversion_limit)),
    )
    return ApiKey.from_row(row)


async def revoke_key(pool: asyncpg.Pool, account_id: int | None, key_id: int) -> ApiKey:
    """Refused from the next request on; revoking twice keeps the first time."""
    await _get(pool, account_id, key_id)
    row = await pool.fetchrow(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING *", key_id
    )
    return ApiKey.from_row(row)


SECRETS = ("jwt", "webhook")  # a key's derived secrets, each rotated on its own


async def rotate_secret(
    pool: asyncpg.Pool, account_id: int | None, key_id: int, which: str, server_secret: str
) -> tuple[ApiKey, str]:
    """Replace one of the key's derived secrets (its next generation) without revoking the
    key; returns the key and the new secret, shown this once. JWTs signed with the old JWT
    secret are refused from now on; webhooks are signed with the new webhook secret."""
    if which not in SECRETS:
        raise bad(f"Unknown secret '{which}'.", "Rotate 'jwt' (signs JWTs) or 'webhook'.", "secret")
    await _get(pool, account_id, key_id)
    column = f"{which}_secret_version"  # (one of two fixed names)
    row = await pool.fetchrow(
        f"UPDATE api_keys SET {column} = {column} + 1 WHERE id = $1 AND revoked_at IS NULL RETURNING *",
        key_id,
    )
    if row is None:
        raise bad("That key has been revoked.", "Rotate the secrets of a live key.", "key_id")
    key = ApiKey.from_row(row)
    derive = crypto.signing_secret if which == "jwt" else crypto.webhook_secret
    return key, derive(server_secret, key.kid, row[column])


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    key: ApiKey
    plan: Plan
    rate_limits: quota.RateLimits


async def me(rt: Runtime, principal: Principal) -> KeyInfo:
    """The calling key, its counters including this call, and the quota left (GET /v1/keys/me)."""
    await rt.key_calls.flush()  # (calls are counted in batches: app/services/key_calls.py)
    key = await _get(rt.pool, None, current_key(principal).id)
    return KeyInfo(key, principal.plan, await quota.quota(rt, principal))


def current_key(principal: Principal) -> ApiKey:
    if principal.key is None:
        raise ConvertdError(
            ErrorCode.BAD_REQUEST,
            "This credential is not an API key.",
            "Call this with an API key.",
        )
    return principal.key

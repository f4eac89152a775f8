"""Credentials made from an API key: JWTs (ConvertAPI v2) and access tokens (ConvertAPI v1)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from app.auth import crypto, jwts
from app.auth.network import parse_network
from app.errors import ConvertdError, ErrorCode, not_found

if TYPE_CHECKING:
    import asyncpg

    from app.auth.principal import Principal
    from app.runtime import Runtime

MAX_REQUEST_COUNT = 999_999_999
MAX_LIFETIME = 315_569_520  # ten years, in seconds
MAX_TOKENS_PER_CALL = 100
# what an access token gets when the request leaves it out (REST and GraphQL alike)
DEFAULT_REQUEST_COUNT = 1
DEFAULT_LIFETIME = 3600  # an hour
DEFAULT_TOKENS_PER_CALL = 1


@dataclasses.dataclass(frozen=True)
class MintedJwt:
    token: str
    kid: uuid.UUID
    expires_at: datetime
    client_ip: str | None


@dataclasses.dataclass(frozen=True)
class AccessToken:
    token: str  # the credential itself, shown once
    request_count: int
    valid_until: datetime


def bad(message: str, hint: str, field: str) -> ConvertdError:
    return ConvertdError(ErrorCode.BAD_REQUEST, message, hint, field=field)


def _between(value: object, low: int, high: int, field: str, hint: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise bad(f"{field} must be a whole number from {low} to {high:,}.", hint, field)
    return value


def _client_ips(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    entries = [e.strip() for e in value.split(",") if e.strip()]
    for entry in entries:
        if entry.lower() == "localhost":
            continue
        try:
            parse_network(entry)
        except ValueError as exc:
            raise bad(
                f"'{entry}' in ClientIp is not an IP address.",
                "A comma-separated list of addresses, CIDR blocks or localhost.",
                "ClientIp",
            ) from exc
    return ",".join(entries)


async def create_jwt(
    rt: Runtime, principal: Principal, kid: str | None, expires_in: object, client_ip: str | None
) -> MintedJwt:
    """A JWT for the calling key (or, for the master token, any key of the account), signed
    with that key's signing secret.

    A key never mints for its siblings: a domain-restricted browser key must not turn itself
    into the account's unrestricted server key."""
    own = principal.key.kid if principal.method == "api_key" and principal.key else None
    if kid is None and own is not None:
        kid = str(own)
    try:
        ident = uuid.UUID(str(kid))
    except ValueError as exc:
        raise bad("Kid must be a key identifier (a UUID).", "GET /v1/keys/me shows your kid.", "Kid") from exc
    if principal.method != "master" and ident != own:
        raise ConvertdError(
            ErrorCode.FORBIDDEN,
            "A key can mint JWTs only for itself.",
            hint=f"Send the calling key's own kid ({own}), or mint with the account's master token.",
        )
    row = await rt.pool.fetchrow(
        "SELECT kid, revoked_at, jwt_secret_version FROM api_keys WHERE kid = $1 AND account_id = $2",
        ident,
        principal.account_id,
    )
    return _mint(row, rt.settings.secret, expires_in, _client_ips(client_ip))


async def mint_for_key(pool: asyncpg.Pool, server_secret: str, key_id: int, expires_in: object) -> MintedJwt:
    """A JWT for the key `key_id`, for the operator (`convertd keys jwt`): a browser page
    gets a short-lived credential without anyone handling the key's secret."""
    row = await pool.fetchrow(
        "SELECT kid, revoked_at, jwt_secret_version FROM api_keys WHERE id = $1", key_id
    )
    return _mint(row, server_secret, expires_in, None)


def _mint(row: asyncpg.Record | None, server_secret: str, expires_in: object, ips: str | None) -> MintedJwt:
    if row is None:
        raise not_found("Key")
    if row["revoked_at"] is not None:
        raise bad("That key has been revoked.", "Mint tokens for a live key.", "Kid")
    lifetime = _between(
        expires_in,
        1,
        jwts.MAX_MINTED_LIFETIME,
        "ExpiresInSec",
        "JWTs are for short-lived use: at most a day.",
    )
    ident = row["kid"]
    secret = crypto.signing_secret(server_secret, ident, row["jwt_secret_version"])
    now = datetime.now(UTC)
    token = jwts.mint(ident, secret, lifetime, ips, now=now.timestamp())
    return MintedJwt(token, ident, now.replace(microsecond=0) + timedelta(seconds=lifetime), ips)


async def create_access_tokens(
    rt: Runtime,
    principal: Principal,
    *,
    request_count: object = None,
    lifetime: object = None,
    count: object = None,
) -> list[AccessToken]:
    """None (left out of the request): the default of each."""
    requests = _between(
        DEFAULT_REQUEST_COUNT if request_count is None else request_count,
        1,
        MAX_REQUEST_COUNT,
        "RequestCount",
        f"The default is {DEFAULT_REQUEST_COUNT}.",
    )
    seconds = _between(
        DEFAULT_LIFETIME if lifetime is None else lifetime,
        1,
        MAX_LIFETIME,
        "Lifetime",
        f"Seconds; the default is {DEFAULT_LIFETIME} (an hour).",
    )
    how_many = _between(
        DEFAULT_TOKENS_PER_CALL if count is None else count,
        1,
        MAX_TOKENS_PER_CALL,
        "Count",
        f"How many tokens to create; the default is {DEFAULT_TOKENS_PER_CALL}.",
    )
    assert principal.key is not None  # creating tokens needs the secret key (app/auth/operations.py)
    valid_until = datetime.now(UTC) + timedelta(seconds=seconds)
    out = []
    async with rt.pool.acquire() as conn, conn.transaction():
        for _ in range(how_many):
            token = crypto.generate_access_token()
            await conn.execute(
                "INSERT INTO access_tokens (token_hash, prefix, account_id, api_key_id, request_count,"
                " requests_left, valid_until) VALUES ($1, $2, $3, $4, $5, $5, $6)",
                crypto.digest(token),
                crypto.prefix(token),
                principal.account_id,
                principal.key.id,
                requests,
                valid_until,
            )
            out.append(AccessToken(token, requests, valid_until))
    return out


async def delete_access_token(rt: Runtime, principal: Principal, token: str) -> None:
    """Delete one of the account's tokens at once (the caller proved it holds the secret key)."""
    deleted = await rt.pool.fetchval(
        "DELETE FROM access_tokens WHERE token_hash = $1 AND account_id = $2 RETURNING id",
        crypto.digest(token.strip()),
        principal.account_id,
    )
    if deleted is None:
        raise not_found("Token")

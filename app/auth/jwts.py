"""JWTs as the ConvertAPI documents describe them, HS256 with the key's signing secret.

v2: `kid` names the key, `exp` required. v1: `ApiKey` names the key (its kid), `ValidUntil`
is the expiry, `UserIp` the allowed address, and `RequestCount` the calls the token allows,
counted per `Id` (`spend`). Each way a token can be wrong has its own message, so a client
author sees what to fix.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jwt

from app.auth import network
from app.auth.crypto import ACCESS_TOKEN_PREFIX, MASTER_PREFIX
from app.errors import ConvertdError, CredentialCode, ErrorCode

if TYPE_CHECKING:
    import redis.asyncio as aioredis

ALGORITHM = "HS256"
LEEWAY = 10  # seconds of clock skew forgiven on exp, nbf and iat
MAX_MINTED_LIFETIME = 24 * 3600  # server-minted tokens are for short-lived browser use
MAX_REQUEST_COUNT = 999_999_999  # the v1 document's ceiling for access tokens
V1_CLAIMS = {"ValidUntil": "exp", "UserIp": "clientIp"}  # v1's names of the v2 claims
# self-signed ones: at most CONVERTD_JWT_MAX_LIFETIME (this by default) from iat, or from now


def refused(message: str, hint: str) -> ConvertdError:
    return ConvertdError(ErrorCode.UNAUTHENTICATED, message, hint, legacy_code=CredentialCode.INVALID_JWT)


def looks_like_jwt(credential: str) -> bool:
    return credential.count(".") == 2 and credential.startswith("eyJ")


def kid_of(token: str) -> uuid.UUID:
    """The key a token names, read before its signature can be checked (header or payload)."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise refused(
            "The JWT is malformed.",
            "A JWT is three base64url parts (header.payload.signature) signed with HS256.",
        ) from exc
    alg = str(header.get("alg", ""))
    if alg.lower() == "none" or not alg:
        raise refused(
            "The JWT is unsigned (alg 'none'); unsigned tokens are refused.",
            "Sign the token with HS256 and the key's signing secret.",
        )
    if alg != ALGORITHM:
        raise refused(
            f"The JWT algorithm '{alg}' is not accepted; only HS256 is.",
            "Sign the token with HS256 and the key's signing secret.",
        )
    kid = claims.get("kid") or header.get("kid") or claims.get("ApiKey")
    if kid and not claims.get("kid") and str(kid).startswith(("sk_", MASTER_PREFIX, ACCESS_TOKEN_PREFIX)):
        raise refused(
            "The JWT's ApiKey is an API key itself; it names the key by its kid instead.",
            "Put the key's kid (shown when the key was created, and by GET /v1/keys/me) in "
            "ApiKey and sign with the key's signing secret: a token must never carry the key.",
        )
    if not kid:
        raise refused(
            "The JWT has no kid.",
            "Put the kid of the key whose signing secret signed the token in the payload.",
        )
    try:
        return uuid.UUID(str(kid))
    except ValueError as exc:
        raise unknown_kid(str(kid)) from exc


def unknown_kid(kid: str) -> ConvertdError:
    return refused(
        f"The JWT names an unknown key (kid {kid}).",
        "Use the kid shown when the key was created (GET /v1/keys/me shows it too).",
    )


def verify(
    token: str,
    secret: str,
    client_ip: network.Address | None,
    now: float | None = None,
    max_lifetime: int = MAX_MINTED_LIFETIME,
) -> dict[str, Any]:
    """The claims of a token signed with `secret`, or the reason it is refused."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            # the time claims are checked below, each with its own message
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False},
        )
    except jwt.InvalidSignatureError as exc:
        raise refused(
            "The JWT signature does not match.",
            "Sign with HS256 and the signing secret of the key named by kid.",
        ) from exc
    except jwt.InvalidTokenError as exc:
        raise refused("The JWT is malformed.", "Check the token's encoding and claims.") from exc
    if "kid" not in claims and "ApiKey" in claims:
        claims = _from_v1(claims)
    _check_times(claims, time.time() if now is None else now, max_lifetime)
    allowed = claims.get("clientIp")
    if allowed not in (None, ""):
        # the documents' comma-separated string, or a JSON list of the same entries
        entries = allowed.split(",") if isinstance(allowed, str) else []
        if isinstance(allowed, list) and all(isinstance(e, str) for e in allowed):
            entries = allowed
        if not network.in_any(client_ip, entries):
            raise refused(
                f"This JWT may only be used from {','.join(entries) or allowed}; "
                f"the request came from {client_ip}.",
                "Mint a token for the address this client really uses (or leave clientIp out).",
            )
    return claims


def _from_v1(claims: dict[str, Any]) -> dict[str, Any]:
    """ConvertAPI v1's payload read as v2's: ValidUntil is exp, UserIp is clientIp; a
    RequestCount must be a positive whole number (`spend` counts the uses)."""
    if "exp" in claims or "clientIp" in claims:
        raise refused(
            "The JWT mixes ConvertAPI v1's claims (ApiKey, ValidUntil) with v2's (exp, clientIp).",
            "Sign either {ApiKey, ValidUntil, RequestCount, UserIp, Id} or {kid, exp, clientIp}.",
        )
    if not _number(claims.get("ValidUntil")):
        raise refused(
            "The JWT has no ValidUntil claim, or it is not a Unix time in whole seconds.",
            "Set ValidUntil to when the token expires, in seconds since 1970; it is required.",
        )
    count = claims.get("RequestCount")
    if count is not None and not (_number(count) and 1 <= count <= MAX_REQUEST_COUNT):
        raise refused(
            "The JWT's RequestCount is not a whole number from 1 to 999999999.",
            "Set RequestCount to how many requests the token allows, or leave it out.",
        )
    if count is not None and not (isinstance(claims.get("Id"), str) and claims["Id"]):
        raise refused(
            "The JWT has a RequestCount but no Id to count its requests by.",
            "Add Id, a random string (the document's 8 alphanumeric characters), to the payload.",
        )
    return {V1_CLAIMS.get(name, name): value for name, value in claims.items()}


async def spend(redis: aioredis.Redis, kid: uuid.UUID, claims: dict[str, Any]) -> bool:
    """Count one request of a v1 token with a RequestCount; False when none is left.

    The count lives in Redis (one INCR) until the token expires; tokens with the same Id
    and key share it, so re-signing a token does not refill it."""
    counter = f"convertd:jwt-uses:{kid}:{claims['Id']}"
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(counter)
        pipe.expireat(counter, int(claims["exp"]) + LEEWAY)
        used, _ = await pipe.execute()
    return bool(used <= claims["RequestCount"])


def _check_times(claims: dict[str, Any], now: float, max_lifetime: int) -> None:
    """exp, nbf and iat: present where required, whole seconds, and within their bounds."""
    exp = claims.get("exp")
    if exp is None:
        raise refused("The JWT has no exp claim.", "Add exp (Unix time) to the payload; it is required.")
    for name in ("exp", "nbf", "iat"):
        if claims.get(name) is not None and not _number(claims[name]):
            raise refused(
                f"The JWT's {name} is not a Unix time in whole seconds.",
                f"Set {name} to an integer number of seconds since 1970, e.g. int(time.time()).",
            )
    if exp <= now - LEEWAY:
        raise refused("The JWT has expired.", "Mint or sign a new token.")
    nbf = claims.get("nbf")
    if nbf is not None and nbf > now + LEEWAY:
        raise refused("The JWT is not valid yet (nbf is in the future).", "Check nbf and your clock.")
    iat = claims.get("iat")
    if iat is not None and iat > now + LEEWAY:
        raise refused("The JWT was issued in the future (iat).", "Check iat and your clock.")
    # a token for the year 2500 is a key in all but name: its lifetime is capped
    if exp - now > max_lifetime + LEEWAY and iat is None:
        raise refused(
            f"The JWT lives longer than {max_lifetime} s and has no iat.",
            f"Keep exp within {max_lifetime} s of now, or add iat (and keep exp - iat within it).",
        )
    if iat is not None and exp - iat > max_lifetime + LEEWAY:
        raise refused(
            f"The JWT's lifetime (exp - iat) is over the {max_lifetime} s this server allows.",
            "Sign shorter-lived tokens and sign new ones as they run out.",
        )


def _number(value: object) -> bool:
    """A whole number of seconds: NaN, infinities and fractions are refused."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (
        isinstance(value, float) and math.isfinite(value) and value.is_integer()
    )


def mint(
    kid: uuid.UUID, secret: str, expires_in: int, client_ip: str | None, now: float | None = None
) -> str:
    now = int(time.time() if now is None else now)
    claims: Mapping[str, Any] = {
        "kid": str(kid),
        "exp": now + expires_in,
        "iat": now,
        "nbf": now,
        **({"clientIp": client_ip} if client_ip else {}),
    }
    return jwt.encode(dict(claims), secret, algorithm=ALGORITHM, headers={"kid": str(kid)})

"""JWTs: minted (REST and GraphQL) or self-signed with PyJWT; every refusal, on every transport."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import aiohttp
import jwt
import pytest

from app.runtime import Runtime
from app.services.accounts import issue_master_token
from app.services.keys import KeySpec, create_key
from tests.conftest import Account, GraphQL, operation, png_bytes
from tests.transports import TRANSPORTS, call, everywhere


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def sign(acct: Account, **claims: Any) -> str:
    payload = {"kid": acct.kid, "exp": int(time.time()) + 600, **claims}
    return jwt.encode(
        {k: v for k, v in payload.items() if v is not None}, acct.signing_secret, algorithm="HS256"
    )


async def test_self_signed_with_pyjwt_exactly_as_the_documents_payload(
    http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    acct: Account = await make_account("self-signed")
    now = int(time.time())
    # the ConvertAPI v2 document's payload, with times from now instead of its 2025 examples
    payload = {"kid": acct.kid, "exp": now + 20, "iat": now, "nbf": now, "clientIp": "localhost,197.0.0.1"}
    token = jwt.encode(payload, acct.signing_secret, algorithm="HS256")
    outcomes = await everywhere(http, base_url, token)
    assert all(o.ok for o in outcomes), outcomes


async def test_minted_over_rest_with_the_documents_request(
    http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    acct: Account = await make_account("mint-rest")
    body = {"Kid": acct.kid, "ExpiresInSec": 3600, "ClientIp": "localhost,197.0.0.1"}
    headers = {"Authorization": f"Bearer {acct.key}", "Content-Type": "application/json"}
    async with http.post(f"{base_url}/v1/token/jwt", data=json.dumps(body), headers=headers) as r:
        minted = await r.json()
    assert r.status == 200 and minted["kid"] == acct.kid and minted["client_ip"] == "localhost,197.0.0.1"
    claims = jwt.decode(minted["token"], acct.signing_secret, algorithms=["HS256"])
    assert claims["kid"] == acct.kid and claims["exp"] - claims["iat"] == 3600
    assert all(o.ok for o in await everywhere(http, base_url, minted["token"]))


async def test_minted_over_graphql_and_usable_from_a_browser(
    http: aiohttp.ClientSession, base_url: str, gql: GraphQL, make_account: Any
) -> None:
    acct: Account = await make_account("mint-gql")
    body = await gql(operation("CreateJwt"), {"kid": acct.kid, "expiresInSec": 60}, key=acct.key)
    token = body["data"]["createJwt"]["token"]
    browser = {"Origin": "https://shop.example"}
    # the secret key is refused from the browser; its JWT is what the browser uses
    assert all(o.code == "FORBIDDEN" for o in await everywhere(http, base_url, acct.key, headers=browser))
    assert all(o.ok for o in await everywhere(http, base_url, token, headers=browser))


def sign_v1(acct: Account, secret: str | None = None, **claims: Any) -> str:
    """The ConvertAPI v1 document's payload (its `ApiKey` is the key's kid), signed as it says."""
    payload = {
        "Id": "8A4MpB1P",
        "RequestCount": 1,
        "ValidUntil": int(time.time()) + 600,
        "UserIp": "",
        "ApiKey": acct.kid,
        **claims,
    }
    return jwt.encode(
        {k: v for k, v in payload.items() if v is not None},
        secret or acct.signing_secret,
        algorithm="HS256",
    )


def refusals(acct: Account, other: Account) -> list[tuple[str, str]]:
    now = int(time.time())
    header = {"typ": "JWT"}
    payload = {"kid": acct.kid, "exp": now + 600}
    return [
        (f"{b64({**header, 'alg': 'none'})}.{b64(payload)}.", "alg 'none'"),
        (jwt.encode(payload, acct.signing_secret, algorithm="HS512"), "algorithm 'HS512' is not accepted"),
        (f"{b64({**header, 'alg': 'RS256'})}.{b64(payload)}.c2ln", "algorithm 'RS256' is not accepted"),
        (jwt.encode({"exp": now + 600}, acct.signing_secret, algorithm="HS256"), "has no kid"),
        (sign(acct, kid=str(uuid.uuid4())), "unknown key"),
        (sign(acct, kid="not-a-uuid"), "unknown key"),
        (jwt.encode(payload, other.signing_secret, algorithm="HS256"), "signature does not match"),
        (jwt.encode(payload, "guessed", algorithm="HS256"), "signature does not match"),
        (jwt.encode({"kid": acct.kid}, acct.signing_secret, algorithm="HS256"), "no exp"),
        (sign(acct, exp=now - 60), "expired"),
        (sign(acct, nbf=now + 3600), "not valid yet"),
        (sign(acct, iat=now + 3600), "issued in the future"),
        (sign(acct, exp=16725225600), "lives longer than 86400 s and has no iat"),  # the year 2500
        (sign(acct, exp=now + 3 * 86400, iat=now), "lifetime (exp - iat) is over"),
        (sign(acct, exp=float("nan")), "exp is not a Unix time"),
        (sign(acct, exp=float("inf")), "exp is not a Unix time"),
        (sign(acct, exp=now + 600.5), "exp is not a Unix time"),
        (sign(acct, iat=float("-inf")), "iat is not a Unix time"),
        (sign(acct, clientIp="203.0.113.9,198.51.100.0/24"), "may only be used from"),
        ("eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.x", "malformed"),
        # ConvertAPI v1's payload: each way it can be wrong
        (sign_v1(acct, ValidUntil=now - 60), "expired"),
        (sign_v1(acct, ValidUntil=None), "no ValidUntil"),
        (sign_v1(acct, ValidUntil="tomorrow"), "no ValidUntil"),
        (sign_v1(acct, RequestCount=0), "RequestCount is not a whole number"),
        (sign_v1(acct, RequestCount=1.5), "RequestCount is not a whole number"),
        (sign_v1(acct, Id=None), "no Id to count"),
        (sign_v1(acct, UserIp="203.0.113.9"), "may only be used from"),
        (sign_v1(acct, ApiKey=acct.key), "ApiKey is an API key itself"),
        (sign_v1(acct, ApiKey=str(uuid.uuid4())), "unknown key"),
        (sign_v1(acct, exp=now + 600), "mixes ConvertAPI v1's claims"),
        (sign_v1(acct, secret=other.signing_secret), "signature does not match"),
    ]


async def test_convertapi_v1_jwt_allows_its_request_count_from_its_user_ip(
    http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    acct: Account = await make_account("jwt-v1")
    token = sign_v1(acct, RequestCount=2, UserIp="127.0.0.1")
    # the v1 document's own request: `Authentication: Bearer <jwt>` and a multipart file
    headers = {"Authentication": f"Bearer {token}"}
    for _ in range(2):
        form = aiohttp.FormData()
        form.add_field("file", png_bytes(), filename="a.png", content_type="*/*")
        async with http.post(f"{base_url}/convertapi/convert/png/to/jpg", data=form, headers=headers) as r:
            body = await r.json()
            assert r.status == 200 and body["Files"][0]["FileName"].endswith(".jpg"), body
    o = await call("rest", http, base_url, token)
    assert (o.status, o.legacy) == (401, 4012) and "no requests left" in (o.message or ""), o
    assert o.hint
    # the count belongs to the token's Id: signing it again does not refill it, a new Id does
    again = sign_v1(acct, RequestCount=2, ValidUntil=int(time.time()) + 900)
    assert not (await call("rest", http, base_url, again)).ok
    fresh = sign_v1(acct, Id="Zq81mWx0", RequestCount=1)
    assert [o.ok for o in await everywhere(http, base_url, fresh)] == [True, False, False]
    # without a RequestCount it is good until ValidUntil, like a v2 token
    assert all(o.ok for o in await everywhere(http, base_url, sign_v1(acct, RequestCount=None, Id=None)))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_each_bad_jwt_is_refused_with_401_and_its_own_message(
    transport: str, http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    acct: Account = await make_account("jwt-target")
    other: Account = await make_account("jwt-other")
    for token, words in refusals(acct, other):
        o = await call(transport, http, base_url, token)
        assert (o.status, o.code, o.legacy) == (401, "UNAUTHENTICATED", 4012), (words, o)
        assert words in (o.message or ""), (words, o)
        assert o.hint, (words, o)


async def test_client_ip_lists_with_localhost_and_cidr(
    http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    acct: Account = await make_account("jwt-ip")
    for allowed in ("localhost", "203.0.113.9, 127.0.0.1", "127.0.0.0/8", "", ["203.0.113.9", "127.0.0.1"]):
        assert all(o.ok for o in await everywhere(http, base_url, sign(acct, clientIp=allowed))), allowed
    refused = await call("rest", http, base_url, sign(acct, clientIp=["203.0.113.9"]))
    assert refused.status == 401 and "may only be used from 203.0.113.9" in (refused.message or "")


async def test_long_lived_tokens_within_the_cap_are_accepted(
    http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    acct: Account = await make_account("jwt-long")
    now = int(time.time())
    for claims in ({"exp": now + 86000}, {"exp": now + 80000, "iat": now - 5000}, {"exp": float(now + 60)}):
        assert (await call("rest", http, base_url, sign(acct, **claims))).ok, claims


async def test_a_revoked_keys_jwts_are_refused(
    http: aiohttp.ClientSession, base_url: str, rt: Runtime, make_account: Any
) -> None:
    acct: Account = await make_account("jwt-revoked")
    token = sign(acct)
    assert (await call("rest", http, base_url, token)).ok
    await rt.pool.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", acct.key_id)
    o = await call("rest", http, base_url, token)
    assert (o.status, o.legacy) == (401, 4012) and "revoked" in (o.message or "")


async def test_minting_rules(
    http: aiohttp.ClientSession, base_url: str, gql: GraphQL, make_account: Any
) -> None:
    acct: Account = await make_account("mint-rules")
    other: Account = await make_account("mint-other")
    cases = [
        ({"kid": other.kid, "expiresInSec": 60}, "FORBIDDEN"),  # another account's key
        ({"kid": acct.kid, "expiresInSec": 0}, "BAD_REQUEST"),
        ({"kid": acct.kid, "expiresInSec": 86401}, "BAD_REQUEST"),
        ({"kid": acct.kid, "expiresInSec": 60, "clientIp": "somewhere"}, "BAD_REQUEST"),
        ({"kid": "nope", "expiresInSec": 60}, "BAD_REQUEST"),
    ]
    for variables, code in cases:
        body = await gql(operation("CreateJwt"), variables, key=acct.key)
        assert body["errors"][0]["extensions"]["code"] == code, variables
    # a JWT cannot mint more JWTs: minting needs the secret key itself
    body = await gql(
        operation("CreateJwt"),
        {"kid": acct.kid, "expiresInSec": 60},
        headers={"Authorization": f"Bearer {sign(acct)}"},
    )
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    async with http.post(
        f"{base_url}/v1/token/jwt", json={"Kid": acct.kid}, headers={"X-API-Key": acct.key}
    ) as r:
        assert r.status == 400 and (await r.json())["field"] == "ExpiresInSec"


async def test_the_signing_secret_is_not_stored(rt: Runtime, make_account: Any) -> None:
    acct: Account = await make_account("no-plaintext")
    row = await rt.pool.fetchrow("SELECT * FROM api_keys WHERE id = $1", acct.key_id)
    stored = " ".join(str(v) for v in dict(row).values())
    assert acct.signing_secret not in stored and acct.key not in stored
    dump = await rt.pool.fetchval(
        "SELECT string_agg(t::text, ' ') FROM accounts t WHERE id = $1", acct.account_id
    )
    assert acct.signing_secret not in dump


async def test_a_key_mints_only_for_itself_and_the_master_token_for_any_key_of_its_account(
    http: aiohttp.ClientSession, base_url: str, gql: GraphQL, rt: Runtime, make_account: Any
) -> None:
    server: Account = await make_account("jwt-siblings")
    browser = await create_key(
        rt.pool,
        server.account_id,
        KeySpec(name="browser", allowed_domains=["*.example.com"]),
        server_secret=rt.settings.secret,
    )
    site = {"Origin": "https://app.example.com", "X-API-Key": browser.secret}
    other: Account = await make_account("jwt-stranger")

    # the browser key asks for a JWT of the unrestricted server key: refused on both APIs
    async with http.post(
        f"{base_url}/v1/token/jwt", json={"Kid": server.kid, "ExpiresInSec": 60}, headers=site
    ) as r:
        assert r.status == 403, await r.text()
        assert "only for itself" in (await r.json())["message"]
    body = await gql(operation("CreateJwt"), {"kid": server.kid, "expiresInSec": 60}, headers=site)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "data" not in body or body["data"] is None or body["data"].get("createJwt") is None

    # for itself it may, and the JWT is the browser key's (still domain-restricted)
    own = str(browser.key.kid)
    async with http.post(
        f"{base_url}/v1/token/jwt", json={"Kid": own, "ExpiresInSec": 60}, headers=site
    ) as r:
        assert r.status == 200 and (await r.json())["kid"] == own
    body = await gql(operation("CreateJwt"), {"kid": own, "expiresInSec": 60}, headers=site)
    assert jwt.decode(body["data"]["createJwt"]["token"], options={"verify_signature": False})["kid"] == own

    # the master token mints for any key of its account, never for another account's
    master = await issue_master_token(rt.pool, server.account_id)
    bearer = {"Authorization": f"Bearer {master}"}
    async with http.post(
        f"{base_url}/v1/token/jwt", json={"Kid": server.kid, "ExpiresInSec": 60}, headers=bearer
    ) as r:
        assert r.status == 200, await r.text()
        token = (await r.json())["token"]
    async with http.get(f"{base_url}/v1/keys/me", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200
    body = await gql(operation("CreateJwt"), {"kid": own, "expiresInSec": 60}, headers=bearer)
    assert body["data"]["createJwt"]["kid"] == own
    body = await gql(operation("CreateJwt"), {"kid": other.kid, "expiresInSec": 60}, headers=bearer)
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"

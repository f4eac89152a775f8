"""Access tokens as the ConvertAPI v1 document has them: request count, lifetime, count, delete."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import jwt
import pytest

from app.runtime import Runtime
from tests.conftest import Account, GraphQL, operation, png_bytes
from tests.transports import TRANSPORTS, call


async def create_rest(http: aiohttp.ClientSession, base_url: str, key: str, **params: Any) -> tuple[int, Any]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    async with http.post(f"{base_url}/v1/token/create?Secret={key}&{query}") as r:
        return r.status, await r.json()


async def test_create_with_the_documents_defaults_and_parameters(
    http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    acct: Account = await make_account("tokens")
    status, body = await create_rest(http, base_url, acct.key)
    assert status == 200 and body["code"] == 2000 and len(body["Tokens"]) == 1
    token = body["Tokens"][0]
    assert token["Id"].startswith("at_") and token["RequestCount"] == 1
    lifetime = datetime.fromisoformat(token["ValidUntil"]) - datetime.now(UTC)
    assert 3590 < lifetime.total_seconds() <= 3600

    status, body = await create_rest(
        http, base_url, acct.key, RequestCount=999999999, Lifetime=315569520, Count=2
    )
    assert status == 200 and [t["RequestCount"] for t in body["Tokens"]] == [999999999, 999999999]
    assert body["Tokens"][0]["Id"] != body["Tokens"][1]["Id"]
    for bad in (
        {"RequestCount": 1000000000},
        {"RequestCount": 0},
        {"Lifetime": 315569521},
        {"Count": 0},
        {"Lifetime": "soon"},
    ):
        status, body = await create_rest(http, base_url, acct.key, **bad)
        assert status == 400 and body["field"] == next(iter(bad)), bad


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_each_use_spends_one_request_and_an_exhausted_token_is_refused(
    transport: str, http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    acct: Account = await make_account("spend")
    _, body = await create_rest(http, base_url, acct.key, RequestCount=2)
    token = body["Tokens"][0]["Id"]
    assert (await call(transport, http, base_url, token)).ok
    assert (await call(transport, http, base_url, token)).ok
    refused = await call(transport, http, base_url, token)
    assert (refused.status, refused.code, refused.legacy) == (401, "UNAUTHENTICATED", 4011)
    assert "no requests left" in (refused.message or "")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_expired_and_unknown_tokens_are_refused(
    transport: str, http: aiohttp.ClientSession, base_url: str, rt: Runtime, make_account: Any
) -> None:
    acct: Account = await make_account("expire")
    _, body = await create_rest(http, base_url, acct.key, RequestCount=5, Lifetime=1)
    token = body["Tokens"][0]["Id"]
    await rt.pool.execute(
        "UPDATE access_tokens SET valid_until = now() - interval '1 second' WHERE account_id = $1",
        acct.account_id,
    )
    refused = await call(transport, http, base_url, token)
    assert (refused.status, refused.legacy) == (401, 4011) and "expired" in (refused.message or "")
    refused = await call(transport, http, base_url, "at_" + "x" * 32)
    assert (refused.status, refused.legacy) == (401, 4011) and "not valid" in (refused.message or "")


async def test_delete_needs_the_secret(
    http: aiohttp.ClientSession, base_url: str, gql: GraphQL, make_account: Any
) -> None:
    acct: Account = await make_account("deleter")
    other: Account = await make_account("stranger")
    _, body = await create_rest(http, base_url, acct.key, RequestCount=10, Count=2)
    first, second = (t["Id"] for t in body["Tokens"])
    # the token itself cannot delete itself (a page that holds it must not), nor another account
    async with http.delete(f"{base_url}/v1/token/{first}?Token={first}") as r:
        assert r.status == 403 and "needs the API key itself" in (await r.json())["message"]
    async with http.delete(f"{base_url}/v1/token/{first}?Secret={other.key}") as r:
        assert r.status == 404
    async with http.delete(f"{base_url}/v1/token/{first}") as r:
        assert r.status == 401 and (await r.json())["code"] == 4013
    async with http.delete(f"{base_url}/v1/token/{first}?Secret={acct.key}") as r:
        assert r.status == 200 and (await r.json())["code"] == 2001
    assert (await call("rest", http, base_url, first)).legacy == 4011
    # GraphQL: with the key it goes; with the token it is refused
    body = await gql(
        operation("DeleteAccessToken"), {"id": second}, headers={"Authorization": f"Bearer {second}"}
    )
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    body = await gql(operation("DeleteAccessToken"), {"id": second}, key=acct.key)
    assert body["data"]["deleteAccessToken"] is True
    assert (await call("graphql", http, base_url, second)).legacy == 4011


async def test_graphql_create_and_token_restrictions_follow_the_key(
    http: aiohttp.ClientSession, base_url: str, gql: GraphQL, make_account: Any
) -> None:
    acct: Account = await make_account("gql-tokens", allowed_ips=["203.0.113.5"])
    # the key cannot be used from here, so neither can it create tokens from here...
    body = await gql(operation("CreateAccessTokens"), {"requestCount": 3}, key=acct.key)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    free: Account = await make_account("gql-tokens-2")
    body = await gql(operation("CreateAccessTokens"), {"requestCount": 3, "count": 2}, key=free.key)
    tokens = body["data"]["createAccessTokens"]
    assert len(tokens) == 2 and tokens[0]["requestCount"] == 3
    # ...and a token may be used from a browser, unlike the secret key
    browser = {"Origin": "https://app.example"}
    assert (await call("rest", http, base_url, tokens[0]["id"], headers=browser)).ok
    # tokens cannot create tokens
    body = await gql(
        operation("CreateAccessTokens"), {}, headers={"Authorization": f"Bearer {tokens[1]['id']}"}
    )
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_the_v1_documents_authentication_header_carries_jwt_token_and_secret(
    http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    # The ConvertAPI v1 document writes "Authentication:" (not Authorization), with
    # "Bearer your_jwt_token" (tokens) and "Basic your_api_key your_api_secret".
    acct: Account = await make_account("v1-header")
    _, body = await create_rest(http, base_url, acct.key, RequestCount=5)
    token = body["Tokens"][0]["Id"]
    signed = jwt.encode(
        {"kid": acct.kid, "exp": int(time.time()) + 600}, acct.signing_secret, algorithm="HS256"
    )
    for value in (f"Bearer {signed}", f"Bearer {token}", f"Basic {acct.kid} {acct.key}"):
        async with http.get(f"{base_url}/v1/keys/me", headers={"Authentication": value}) as r:
            assert r.status == 200, (value, await r.text())
            assert (await r.json())["kid"] == acct.kid
    async with http.get(
        f"{base_url}/v1/keys/me", headers={"Authentication": f"Basic {acct.kid} sk_live_x"}
    ) as r:
        assert r.status == 401 and (await r.json())["code"] == 4010


async def test_the_v1_documents_token_requests_at_the_convertapi_base(
    http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    """The v1 document's `POST /token/create?Secret=...` and `DELETE /token/{id}?Secret=...`
    under ConvertAPI's base URI (/convertapi/), as its SDKs and examples call them."""
    acct: Account = await make_account("v1 base")
    url = f"{base_url}/convertapi/token/create?Secret={acct.key}&RequestCount=3&Lifetime=3600&Count=2"
    async with http.post(url) as r:
        body = await r.json()
        assert r.status == 200, body
    assert [t["RequestCount"] for t in body["Tokens"]] == [3, 3]
    first = body["Tokens"][0]["Id"]
    async with http.post(f"{base_url}/convertapi/convert/png/to/jpg?Token={first}", data=_png_form()) as r:
        assert r.status == 200, await r.text()
    async with http.delete(f"{base_url}/convertapi/token/{first}?Secret={acct.key}") as r:
        assert (r.status, (await r.json())["code"]) == (200, 2001)
    # refusals here are in ConvertAPI's shape, as on the other /convertapi/ routes
    async with http.post(f"{base_url}/convertapi/convert/png/to/jpg?Token={first}", data=_png_form()) as r:
        assert (r.status, (await r.json())["Code"]) == (401, 4011)
    async with http.post(f"{base_url}/convertapi/token/create?Secret={acct.key}&Count=0") as r:
        refused = await r.json()
        assert (r.status, refused["Code"], list(refused["InvalidParameters"])) == (400, 4000, ["Count"])


def _png_form() -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("File", png_bytes(), filename="a.png", content_type="image/png")
    return form

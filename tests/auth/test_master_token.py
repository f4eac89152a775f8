"""The master token: administration only, one per account, refreshed at once; key management;
account information, consumption, statistics and the request log."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from app.runtime import Runtime
from app.services.accounts import issue_master_token
from tests.conftest import Account, GraphQL, operation, wait_for_status
from tests.helpers import queue_tiny_job
from tests.transports import TRANSPORTS, call, everywhere
from tests.wsclient import connect, subscribe


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def admin(rt: Runtime, make_account: Any) -> tuple[Account, str]:
    acct: Account = await make_account("admin", "basic")
    return acct, await issue_master_token(rt.pool, acct.account_id)


async def test_administration_with_the_master_token_over_graphql(
    gql: GraphQL, admin: tuple[Account, str]
) -> None:
    acct, master = admin
    body = await gql(operation("Account"), headers=bearer(master))
    assert "errors" not in body, body
    data = body["data"]
    assert data["account"]["id"] == acct.account_id and data["account"]["plan"]["name"] == "basic"
    assert data["account"]["masterTokenPrefix"] == master[:16]
    assert data["consumption"]["rateLimits"]["callsPerDay"] == 2000
    assert [k["id"] for k in data["consumption"]["keys"]] == [acct.key_id]
    keys = (await gql(operation("Keys"), headers=bearer(master)))["data"]["keys"]
    assert [k["kid"] for k in keys] == [acct.kid]


async def test_administration_over_rest(
    http: aiohttp.ClientSession, base_url: str, admin: tuple[Account, str]
) -> None:
    acct, master = admin
    for path in (
        "/v1/account",
        "/v1/account/consumption",
        "/v1/account/statistics",
        "/v1/account/requests",
        "/v1/account/keys",
    ):
        async with http.get(base_url + path, headers=bearer(master)) as r:
            assert r.status == 200, path
            assert (await r.json())["ok"] is True
    async with http.get(f"{base_url}/v1/account/consumption", headers=bearer(master)) as r:
        body = await r.json()
    assert body["rate_limits"]["calls_per_minute"] == 60 and body["keys"][0]["key_id"] == acct.key_id


@pytest.mark.parametrize("transport", ["rest", "graphql"])
async def test_a_conversion_key_is_not_accepted_for_administration(
    transport: str, http: aiohttp.ClientSession, base_url: str, admin: tuple[Account, str]
) -> None:
    acct, _ = admin
    o = await call(transport, http, base_url, acct.key, path="/v1/account", document=operation("Keys"))
    assert (o.status, o.code) == (403, "FORBIDDEN") and "master token" in (o.message or "")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_master_token_is_not_accepted_for_conversions(
    transport: str, http: aiohttp.ClientSession, base_url: str, admin: tuple[Account, str]
) -> None:
    _, master = admin
    if transport == "websocket":
        # the connection itself is allowed (administration may use it); conversion operations are not
        sub, ack = await connect(http, base_url, payload=bearer(master))
        assert ack["type"] == "connection_ack"
        await subscribe(sub, operation("JobUpdates"), {"jobId": "00000000-0000-0000-0000-000000000000"})
        msg = await sub.next_message()
        assert msg["type"] == "error" and msg["payload"][0]["extensions"]["code"] == "FORBIDDEN"
        assert "administration only" in msg["payload"][0]["message"]
        await sub.ws.close()
        return
    o = await call(transport, http, base_url, master, path="/v1/formats", document=operation("Formats"))
    assert (o.status, o.code) == (403, "FORBIDDEN") and "administration only" in (o.message or "")


async def test_refreshing_invalidates_the_previous_token_at_once(
    http: aiohttp.ClientSession, base_url: str, gql: GraphQL, admin: tuple[Account, str]
) -> None:
    _, old = admin
    body = await gql(operation("RefreshMasterToken"), headers=bearer(old))
    new = body["data"]["refreshMasterToken"]
    assert new.startswith("mt_") and new != old
    for o in await everywhere(http, base_url, old, path="/v1/account", document=operation("Keys")):
        assert (o.status, o.code) == (401, "UNAUTHENTICATED"), o
        assert "master token is not valid" in (o.message or "")
    async with http.post(f"{base_url}/v1/account/master-token", headers=bearer(new)) as r:
        newer = (await r.json())["master_token"]
    assert (await call("rest", http, base_url, new, path="/v1/account")).status == 401
    assert (await call("rest", http, base_url, newer, path="/v1/account")).ok


async def test_an_open_websocket_loses_access_at_once_on_revoke_and_refresh(
    http: aiohttp.ClientSession, base_url: str, gql: GraphQL, admin: tuple[Account, str]
) -> None:
    acct, master = admin
    keyed, _ = await connect(http, base_url, payload={"apiKey": acct.key})
    mastered, _ = await connect(http, base_url, payload=bearer(master))
    await subscribe(mastered, operation("Keys"), {}, op_id="k1")
    assert (await mastered.next_message())["type"] == "next"
    await mastered.next_message()

    await gql(operation("RevokeKey"), {"id": acct.key_id}, headers=bearer(master))
    await subscribe(keyed, operation("Quota"), {})
    msg = await keyed.next_message()
    assert msg["type"] == "error" and msg["payload"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert "revoked" in msg["payload"][0]["message"]

    await gql(operation("RefreshMasterToken"), headers=bearer(master))
    await subscribe(mastered, operation("Keys"), {}, op_id="k2")
    msg = await mastered.next_message()
    assert msg["type"] == "error" and msg["payload"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    await keyed.ws.close()
    await mastered.ws.close()


async def test_key_management_with_the_master_token(
    http: aiohttp.ClientSession, base_url: str, gql: GraphQL, admin: tuple[Account, str], make_account: Any
) -> None:
    acct, master = admin
    created = await gql(
        operation("CreateKey"),
        {"input": {"name": "browser app", "environment": "test", "allowedDomains": ["*.example.com"]}},
        headers=bearer(master),
    )
    made = created["data"]["createKey"]
    assert made["key"].startswith("sk_test_") and made["signingSecret"]
    assert made["apiKey"]["restrictionType"] == "domain"
    site = {"Origin": "https://app.example.com"}
    assert (await call("rest", http, base_url, made["key"], headers=site)).ok
    key_id = made["apiKey"]["id"]

    renamed = await gql(operation("RenameKey"), {"id": key_id, "name": "renamed"}, headers=bearer(master))
    assert renamed["data"]["renameKey"]["name"] == "renamed"
    updated = await gql(
        operation("UpdateKey"),
        {"id": acct.key_id, "input": {"allowedIps": ["203.0.113.5"], "allowedEndpoints": ["/v1/convert"]}},
        headers=bearer(master),
    )
    assert updated["data"]["updateKey"]["restrictionType"] == "ip"
    assert (await call("rest", http, base_url, acct.key)).code == "FORBIDDEN"  # at once
    bad = await gql(
        operation("UpdateKey"), {"id": acct.key_id, "input": {"allowedIps": ["x"]}}, headers=bearer(master)
    )
    assert bad["errors"][0]["extensions"]["code"] == "BAD_REQUEST"

    revoked = await gql(operation("RevokeKey"), {"id": key_id}, headers=bearer(master))
    assert revoked["data"]["revokeKey"]["revokedAt"]
    for o in await everywhere(http, base_url, made["key"], headers=site):
        assert (o.status, o.code) == (401, "UNAUTHENTICATED") and "revoked" in (o.message or ""), o

    stranger: Account = await make_account("stranger")
    body = await gql(operation("RevokeKey"), {"id": stranger.key_id}, headers=bearer(master))
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"

    # the same over REST
    async with http.post(
        f"{base_url}/v1/account/keys", json={"name": "rest key"}, headers=bearer(master)
    ) as r:
        rest_key = await r.json()
    assert r.status == 201 and rest_key["key"].startswith("sk_live_") and rest_key["signing_secret"]
    path = f"{base_url}/v1/account/keys/{rest_key['key_id']}"
    async with http.patch(
        path, json={"name": "rest key 2", "conversion_limit": 5}, headers=bearer(master)
    ) as r:
        assert (await r.json())["conversion_limit"] == 5
    async with http.delete(path, headers=bearer(master)) as r:
        assert (await r.json())["revoked_at"]
    assert (await call("rest", http, base_url, rest_key["key"])).status == 401


async def test_a_keys_environment_cannot_change(
    http: aiohttp.ClientSession, base_url: str, admin: tuple[Account, str]
) -> None:
    acct, master = admin
    path = f"{base_url}/v1/account/keys/{acct.key_id}"
    async with http.patch(path, json={"environment": "test"}, headers=bearer(master)) as r:
        body = await r.json()
    assert r.status == 400 and body["error_code"] == "BAD_REQUEST", body
    assert "cannot change" in body["message"] and "new key" in body["hint"]
    # the same environment again is no change, and the rest of the edit goes through
    async with http.patch(path, json={"environment": "live", "name": "kept"}, headers=bearer(master)) as r:
        body = await r.json()
    assert r.status == 200 and body["environment"] == "live" and body["name"] == "kept", body


async def test_request_log_and_statistics(
    http: aiohttp.ClientSession, base_url: str, gql: GraphQL, admin: tuple[Account, str]
) -> None:
    acct, master = admin
    job_id = await queue_tiny_job(http, base_url, acct.key, b"log me")
    await wait_for_status(http, base_url, acct.key, job_id)
    await gql(operation("Quota"), key=acct.key)
    await call("websocket", http, base_url, acct.key)
    await call("rest", http, base_url, acct.key, path="/v1/status/not-a-job")

    page = (await gql(operation("RequestLog"), {"first": 100}, headers=bearer(master)))["data"]["requestLog"]
    routes = [(e["transport"], e["route"], e["status"]) for e in page["entries"]]
    assert ("rest", "POST /v1/convert", 202) in routes
    assert ("graphql", "query quota", 200) in routes
    assert ("graphql-ws", "connection_init", 200) in routes
    assert ("rest", "GET /v1/status/{job_id}", 404) in routes
    entry = next(e for e in page["entries"] if e["route"] == "POST /v1/convert")
    assert (
        entry["apiKeyId"] == acct.key_id
        and entry["clientIp"] == "127.0.0.1"
        and entry["credential"] == "api_key"
    )
    assert entry["at"]
    first = (await gql(operation("RequestLog"), {"first": 1}, headers=bearer(master)))["data"]["requestLog"]
    assert first["nextCursor"] and len(first["entries"]) == 1
    rest = await gql(
        operation("RequestLog"), {"first": 100, "after": first["nextCursor"]}, headers=bearer(master)
    )
    older = rest["data"]["requestLog"]["entries"]
    assert older and first["entries"][0] not in older
    assert all(e["at"] <= first["entries"][0]["at"] for e in older)

    stats = (await gql(operation("Account"), headers=bearer(master)))["data"]["statistics"]
    today = stats["days"][0]
    assert (
        today["conversions"] == 1
        and today["finished"] == 1
        and today["requests"] >= 5
        and today["refused"] >= 1
    )
    assert stats["conversions"] == [
        {
            "filetype": "hash",
            "inputFormat": "txt",
            "outputFormat": "txt",
            "conversions": 1,
            "finished": 1,
            "failed": 0,
        }
    ]

"""Key restrictions (IP, domain, browser origin, endpoints) and the client address, on every transport."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.conftest import Account, GraphQL, operation
from tests.transports import TRANSPORTS, call, everywhere
from tests.wsclient import connect, subscribe


def assert_all_refused(outcomes: list[Any], status: int, code: str, words: str) -> None:
    for o in outcomes:
        assert (o.transport, o.status, o.code) == (o.transport, status, code), o
        assert words in (o.message or ""), o
        assert o.hint, o


async def test_ip_restriction_single_addresses_and_cidr(
    http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    for allowed in (["127.0.0.1"], ["127.0.0.0/8"], ["10.1.2.3", "127.0.0.1/32"]):
        acct: Account = await make_account("ip-ok", allowed_ips=allowed)
        assert all(o.ok for o in await everywhere(http, base_url, acct.key)), allowed
    for allowed in (["203.0.113.5"], ["10.0.0.0/8"], ["::1"]):
        acct = await make_account("ip-no", allowed_ips=allowed)
        assert_all_refused(await everywhere(http, base_url, acct.key), 403, "FORBIDDEN", "127.0.0.1")


async def test_ip_restriction_ipv6(http: aiohttp.ClientSession, make_server: Any, make_account: Any) -> None:
    base = await make_server(host="::1")
    for allowed in (["::1"], ["::1/128"], ["0:0:0:0:0:0:0:1"]):
        acct: Account = await make_account("v6-ok", allowed_ips=allowed)
        assert all(o.ok for o in await everywhere(http, base, acct.key)), allowed
    for allowed in (["2001:db8::/32"], ["127.0.0.1"]):
        acct = await make_account("v6-no", allowed_ips=allowed)
        assert_all_refused(await everywhere(http, base, acct.key), 403, "FORBIDDEN", "::1")


async def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(
    http: aiohttp.ClientSession, base_url: str, make_server: Any, make_account: Any
) -> None:
    acct: Account = await make_account("behind-proxy", allowed_ips=["203.0.113.5"])
    spoofed = {"X-Forwarded-For": "203.0.113.5"}
    assert_all_refused(
        await everywhere(http, base_url, acct.key, headers=spoofed), 403, "FORBIDDEN", "127.0.0.1"
    )

    proxied = await make_server(trusted_proxies=("127.0.0.1",))
    assert all(o.ok for o in await everywhere(http, proxied, acct.key, headers=spoofed))
    # behind the proxy a client can only prepend: the proxy's own entry is the one believed
    forged = {"X-Forwarded-For": "203.0.113.5, 198.51.100.7"}
    assert_all_refused(
        await everywhere(http, proxied, acct.key, headers=forged), 403, "FORBIDDEN", "198.51.100.7"
    )
    # a chain of trusted proxies is walked from the right
    chained = await make_server(trusted_proxies=("127.0.0.1", "10.0.0.0/8"))
    hops = {"X-Forwarded-For": "203.0.113.5, 10.1.1.1"}
    assert all(o.ok for o in await everywhere(http, chained, acct.key, headers=hops))


async def test_domain_restriction_exact_and_wildcard_on_origin_then_referer(
    http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    acct: Account = await make_account("site", allowed_domains=["example.com", "*.example.org"])
    for headers in (
        {"Origin": "https://example.com"},
        {"Origin": "http://example.com:8080"},
        {"Origin": "https://app.example.org"},
        {"Origin": "https://a.b.example.org"},
        {"Referer": "https://example.com/pricing?x=1"},
    ):
        assert all(o.ok for o in await everywhere(http, base_url, acct.key, headers=headers)), headers
    for headers, words in (
        ({"Origin": "https://example.org"}, "example.org"),  # the wildcard covers subdomains only
        ({"Origin": "https://evil.com"}, "evil.com"),
        ({"Origin": "https://example.com.evil.com"}, "example.com.evil.com"),
        ({"Referer": "https://notexample.com/"}, "notexample.com"),
        ({"Origin": "https://evil.com", "Referer": "https://example.com/"}, "evil.com"),
    ):
        outcomes = await everywhere(http, base_url, acct.key, headers=headers)
        assert_all_refused(outcomes, 403, "FORBIDDEN", words)
    outcomes = await everywhere(http, base_url, acct.key)
    assert_all_refused(outcomes, 403, "FORBIDDEN", "restricted to web domains")


async def test_a_secret_key_from_a_browser_is_refused_with_a_hint_to_use_a_jwt(
    http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    for spec in ({}, {"allowed_ips": ["127.0.0.1"]}):
        acct: Account = await make_account("browser", **spec)
        outcomes = await everywhere(http, base_url, acct.key, headers={"Origin": "https://shop.example"})
        assert_all_refused(outcomes, 403, "FORBIDDEN", "cannot be used from a browser")
        assert all("JWT" in (o.hint or "") for o in outcomes)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_allowed_endpoints_rest_paths_grant_their_graphql_fields(
    transport: str, http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    acct: Account = await make_account("scoped", allowed_endpoints=["/v1/keys/me"])
    assert (await call(transport, http, base_url, acct.key)).ok  # /v1/keys/me, or quota
    if transport == "websocket":
        return  # what a websocket may run is checked per operation below
    refused = await call(
        transport, http, base_url, acct.key, path="/v1/formats", document="{ formats { filetype } }"
    )
    assert (refused.status, refused.code) == (403, "FORBIDDEN")
    assert "may not call 'formats'" in (refused.message or "") and "/v1/keys/me" in (refused.hint or "")


async def test_allowed_endpoints_on_graphql_by_field_name(gql: GraphQL, make_account: Any) -> None:
    acct: Account = await make_account("fields", allowed_endpoints=["Mutation.convert", "jobs"])
    body = await gql("{ jobs(first: 1) { nodes { id } } }", key=acct.key)
    assert "errors" not in body
    # one field outside the list refuses the whole operation before anything runs
    body = await gql("query Q { jobs(first: 1) { nodes { id } } formats { filetype } }", key=acct.key)
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
    # fragments do not hide a root field
    body = await gql("query Q { ...F } fragment F on Query { formats { filetype } }", key=acct.key)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "errors" not in await gql("{ __typename }", key=acct.key)


async def test_allowed_endpoints_hold_for_websocket_subscriptions(
    http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    acct: Account = await make_account("ws-scoped", allowed_endpoints=["/v1/convert"])
    sub, ack = await connect(http, base_url, payload={"apiKey": acct.key})
    assert ack["type"] == "connection_ack"
    await subscribe(sub, operation("JobUpdates"), {"jobId": "00000000-0000-0000-0000-000000000000"})
    msg = await sub.next_message()
    assert msg["type"] == "error"
    assert msg["payload"][0]["extensions"]["code"] == "FORBIDDEN"
    await sub.ws.close()

    allowed: Account = await make_account("ws-status", allowed_endpoints=["/v1/status"])
    sub, _ = await connect(http, base_url, payload={"apiKey": allowed.key})
    await subscribe(sub, operation("JobUpdates"), {"jobId": "00000000-0000-0000-0000-000000000000"})
    msg = await sub.next_message()
    assert msg["type"] == "next" and msg["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    await sub.ws.close()


async def test_environment_is_visible_in_the_prefix(
    http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    acct: Account = await make_account("sandbox", environment="test")
    assert acct.key.startswith("sk_test_")
    async with http.get(f"{base_url}/v1/keys/me", headers={"X-API-Key": acct.key}) as r:
        body = await r.json()
    assert body["environment"] == "test" and body["prefix"].startswith("sk_test_")

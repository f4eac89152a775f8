"""Plans' API access, the quota as GET /v1/keys/me shows it, and the conversion allowance."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from app.auth.authenticate import authenticate
from app.auth.request import RequestInfo
from app.errors import ConvertdError
from app.runtime import Runtime
from app.services import allowance
from tests.conftest import Account, GraphQL, operation
from tests.transports import TRANSPORTS, call


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_plan_without_api_access_gets_403_with_an_upgrade_hint(
    transport: str, http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    acct: Account = await make_account("freeloader", "free")
    refused = await call(transport, http, base_url, acct.key)
    assert (refused.status, refused.code) == (403, "FORBIDDEN")
    assert "API access is not enabled on the free plan" in (refused.message or "")
    assert "Upgrade" in (refused.hint or "")


async def test_keys_me_rate_limits_exactly_as_the_document(
    http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    acct: Account = await make_account("My Production Key", "basic")
    for _ in range(2):
        async with http.get(f"{base_url}/v1/formats", headers={"X-API-Key": acct.key}) as r:
            assert r.status == 200
    async with http.get(f"{base_url}/v1/keys/me", headers={"X-API-Key": acct.key}) as r:
        body = await r.json()
    assert body["ok"] is True and body["key_id"] == acct.key_id and body["name"] == "My Production Key"
    for field in (
        "restriction_type",
        "allowed_ips",
        "allowed_domains",
        "usage_count",
        "last_used_at",
        "created_at",
    ):
        assert field in body
    # this call is counted too: two formats calls and this one
    assert body["rate_limits"] == {
        "calls_per_day": 2000,
        "calls_per_minute": 60,
        "used_today": 3,
        "used_this_minute": 3,
        "remaining_today": 1997,
    }


async def test_unlimited_plan_quota_shows_nulls_and_counts(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    async with http.get(f"{base_url}/v1/keys/me", headers={"X-API-Key": account.key}) as r:
        limits = (await r.json())["rate_limits"]
    assert limits == {
        "calls_per_day": None,
        "calls_per_minute": None,
        "used_today": 1,
        "used_this_minute": 1,
        "remaining_today": None,
    }


async def test_graphql_quota_and_me_rate_limits(gql: GraphQL, make_account: Any) -> None:
    acct: Account = await make_account("gql-quota", "basic")
    quota = (await gql(operation("Quota"), key=acct.key))["data"]["quota"]
    assert quota == {
        "callsPerDay": 2000,
        "callsPerMinute": 60,
        "usedToday": 1,
        "usedThisMinute": 1,
        "remainingToday": 1999,
    }
    me = (await gql(operation("Me"), key=acct.key))["data"]["me"]
    assert me["rateLimits"]["usedToday"] == 2 and me["rateLimits"]["remainingToday"] == 1998
    assert me["plan"] == "basic"


async def _convert_rest(http: aiohttp.ClientSession, base_url: str, key: str) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("file", b"some bytes", filename="a.txt")
    form.add_field("filetype", "hash")
    form.add_field("output_format", "txt")
    async with http.post(f"{base_url}/v1/convert", data=form, headers={"X-API-Key": key}) as r:
        return r.status, await r.json()


async def _convert_graphql(gql: GraphQL, key: str) -> dict[str, Any]:
    _status, body = await gql.multipart(
        operation("Convert"),
        {"input": {"file": None, "filetype": "hash", "outputFormat": "txt"}},
        {"variables.input.file": ("a.txt", b"some bytes")},
        key=key,
    )
    return body


async def test_spent_conversion_allowance_answers_403_no_conversions_remaining(
    http: aiohttp.ClientSession, base_url: str, gql: GraphQL, make_account: Any, make_plan: Any
) -> None:
    plan = await make_plan(conversions=2)
    acct: Account = await make_account("allowance", plan)
    assert (await _convert_rest(http, base_url, acct.key))[0] == 202
    assert "errors" not in await _convert_graphql(gql, acct.key)
    status, body = await _convert_rest(http, base_url, acct.key)
    assert status == 403 and body["error_code"] == "QUOTA_EXCEEDED"
    assert body["message"] == "No conversions remaining. Upgrade your plan or purchase more conversions."
    err = (await _convert_graphql(gql, acct.key))["errors"][0]
    assert err["extensions"]["code"] == "QUOTA_EXCEEDED" and err["extensions"]["status"] == 403
    assert err["message"].startswith("No conversions remaining")
    # an invalid request is refused for what it is and spends nothing
    form = aiohttp.FormData()
    form.add_field("file", b"x", filename="a.txt")
    form.add_field("filetype", "nope")
    form.add_field("output_format", "txt")
    async with http.post(f"{base_url}/v1/convert", data=form, headers={"X-API-Key": acct.key}) as r:
        assert r.status == 400


async def test_a_per_key_conversion_limit(
    http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    acct: Account = await make_account("key-limit", conversion_limit=1)
    assert (await _convert_rest(http, base_url, acct.key))[0] == 202
    status, body = await _convert_rest(http, base_url, acct.key)
    assert status == 403 and body["error_code"] == "QUOTA_EXCEEDED"
    assert body["message"] == "No conversions remaining on this key."
    async with http.get(f"{base_url}/v1/keys/me", headers={"X-API-Key": acct.key}) as r:
        me = await r.json()
    assert (me["conversions_used"], me["conversion_limit"]) == (1, 1)


async def test_concurrent_conversions_take_exactly_the_allowance_left_of_account_and_key(
    rt: Runtime, make_account: Any, make_plan: Any
) -> None:
    """Both allowances or neither, under concurrency: a refusal by the key charges the
    account nothing, and no two calls take the same last conversion."""
    cases = ((3, None, "No conversions remaining. "), (None, 3, "No conversions remaining on this key."))
    for plan_limit, key_limit, refused_by in cases:
        plan = await make_plan(conversions=plan_limit)
        acct: Account = await make_account("racer", plan, conversion_limit=key_limit)
        who = await authenticate(rt, RequestInfo(acct.key, "127.0.0.1", {}, "test", False))
        results = await asyncio.gather(
            *(allowance.spend(rt.pool, who) for _ in range(8)), return_exceptions=True
        )
        refusals = [r for r in results if isinstance(r, ConvertdError)]
        assert len(refusals) == 5 and all(r.message.startswith(refused_by) for r in refusals), results
        used = await rt.pool.fetchrow(
            "SELECT a.conversions_used AS account, k.conversions_used AS key FROM api_keys k"
            " JOIN accounts a ON a.id = k.account_id WHERE k.id = $1",
            acct.key_id,
        )
        assert (used["account"], used["key"]) == (3, 3)

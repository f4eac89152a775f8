"""Plan rate limits: per rolling minute and per UTC day, atomic under concurrency, on every transport."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from app.auth import ratelimit
from app.runtime import Runtime
from tests.conftest import Account
from tests.transports import TRANSPORTS, call
from tests.wsclient import connect, subscribe


async def test_200_requests_at_once_against_a_60_per_minute_key_let_exactly_60_through(
    http: aiohttp.ClientSession, base_url: str, make_account: Any, make_plan: Any
) -> None:
    plan = await make_plan(calls_per_minute=60, calls_per_day=2000)
    acct: Account = await make_account("burst", plan)
    connector = aiohttp.TCPConnector(limit=0)  # really 200 connections at once
    async with aiohttp.ClientSession(connector=connector) as burst:

        async def one() -> int:
            async with burst.get(f"{base_url}/v1/formats", headers={"X-API-Key": acct.key}) as r:
                await r.read()
                return r.status

        statuses = await asyncio.gather(*(one() for _ in range(200)))
    assert statuses.count(200) == 60
    assert statuses.count(429) == 140


async def test_over_the_minute_limit_429_with_retry_after_and_rate_limit_headers(
    http: aiohttp.ClientSession, base_url: str, make_account: Any, make_plan: Any
) -> None:
    plan = await make_plan(calls_per_minute=3, calls_per_day=100)
    acct: Account = await make_account("minute", plan)
    seen = []
    for _ in range(3):
        async with http.get(f"{base_url}/v1/formats", headers={"X-API-Key": acct.key}) as r:
            assert r.status == 200
            seen.append(r.headers["X-RateLimit-Remaining"])
            assert r.headers["X-RateLimit-Limit"] == "3"
    assert seen == ["2", "1", "0"]
    async with http.get(f"{base_url}/v1/formats", headers={"X-API-Key": acct.key}) as r:
        body = await r.json()
        assert r.status == 429
        assert body["error"] == "Too Many Requests" and body["error_code"] == "RATE_LIMITED"
        assert "3 calls per minute" in body["message"] and "X-RateLimit-Remaining" in body["hint"]
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert r.headers["X-RateLimit-Limit"] == "3" and r.headers["X-RateLimit-Remaining"] == "0"
        assert int(r.headers["X-RateLimit-Reset"]) - time.time() <= 61


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_daily_limit_refuses_on_every_transport_until_midnight_utc(
    transport: str, http: aiohttp.ClientSession, base_url: str, make_account: Any, make_plan: Any
) -> None:
    plan = await make_plan(calls_per_minute=100, calls_per_day=2)
    acct: Account = await make_account("daily", plan)
    # (REST: /v1/formats, since GET /v1/keys/me is answered even over the limit)
    assert (await call(transport, http, base_url, acct.key, path="/v1/formats")).ok
    assert (await call(transport, http, base_url, acct.key, path="/v1/formats")).ok
    refused = await call(transport, http, base_url, acct.key, path="/v1/formats")
    assert (refused.status, refused.code) == (429, "RATE_LIMITED")
    assert "per day" in (refused.message or "") and "midnight UTC" in (refused.hint or "")
    if transport != "websocket":
        midnight = ratelimit.next_midnight_utc(time.time())
        assert abs(int(refused.headers["Retry-After"]) - (midnight - time.time())) < 5
        assert refused.headers["X-RateLimit-Reset"] == str(int(midnight))


async def test_keys_me_answers_at_any_time_and_counts_only_while_there_is_room(
    http: aiohttp.ClientSession, base_url: str, make_account: Any, make_plan: Any
) -> None:
    """The SkyConvert document: "Check GET /v1/keys/me at any time to see your remaining quota"."""
    plan = await make_plan(calls_per_minute=2, calls_per_day=100)
    acct: Account = await make_account("at-any-time", plan)
    headers = {"X-API-Key": acct.key}
    async with http.get(f"{base_url}/v1/keys/me", headers=headers) as r:
        assert r.status == 200 and (await r.json())["rate_limits"]["used_this_minute"] == 1
    async with http.get(f"{base_url}/v1/formats", headers=headers) as r:
        assert r.status == 200
    async with http.get(f"{base_url}/v1/formats", headers=headers) as r:
        assert r.status == 429
        assert "GET /v1/keys/me shows the quota" in (await r.json())["hint"]
    for _ in range(2):  # over the limit: answered, and not counted
        async with http.get(f"{base_url}/v1/keys/me", headers=headers) as r:
            body = await r.json()
            assert r.status == 200, body
            limits = body["rate_limits"]
            assert (limits["used_this_minute"], limits["used_today"], limits["remaining_today"]) == (2, 2, 98)
            assert r.headers["X-RateLimit-Remaining"] == "0" and "Retry-After" not in r.headers
    # its restrictions still hold: a wrong key is 401 whatever the limits say
    async with http.get(f"{base_url}/v1/keys/me", headers={"X-API-Key": acct.key + "x"}) as r:
        assert r.status == 401


async def test_graphql_responses_carry_the_rate_limit_headers(
    http: aiohttp.ClientSession, base_url: str, make_account: Any, make_plan: Any
) -> None:
    plan = await make_plan(calls_per_minute=10, calls_per_day=100)
    acct: Account = await make_account("gqlheaders", plan)
    outcome = await call("graphql", http, base_url, acct.key)
    assert outcome.ok and outcome.headers["X-RateLimit-Limit"] == "10"
    assert outcome.headers["X-RateLimit-Remaining"] == "9"


async def test_the_minute_window_rolls_rather_than_resets(rt: Runtime) -> None:
    scope, t0 = f"roll-{time.time_ns()}", 1_800_000_000.0
    assert not (await ratelimit.hit(rt.redis, scope, 2, None, now=t0)).refused
    assert not (await ratelimit.hit(rt.redis, scope, 2, None, now=t0 + 30)).refused
    refused = await ratelimit.hit(rt.redis, scope, 2, None, now=t0 + 59)
    assert refused.refused == "minute" and refused.retry_after == 1  # the call at t0 leaves at t0+60
    # a fixed window would have reset at t0+60 and let two through; the rolling one frees one slot
    assert not (await ratelimit.hit(rt.redis, scope, 2, None, now=t0 + 60.5)).refused
    assert (await ratelimit.hit(rt.redis, scope, 2, None, now=t0 + 61)).refused == "minute"
    assert not (await ratelimit.hit(rt.redis, scope, 2, None, now=t0 + 90.5)).refused


async def test_the_day_resets_at_midnight_utc_not_24_hours_after_the_first_call(rt: Runtime) -> None:
    scope = f"day-{time.time_ns()}"
    evening = datetime(2031, 5, 6, 23, 59, 0, tzinfo=UTC).timestamp()
    assert not (await ratelimit.hit(rt.redis, scope, None, 1, now=evening)).refused
    refused = await ratelimit.hit(rt.redis, scope, None, 1, now=evening + 30)
    assert refused.refused == "day" and refused.retry_after == 30
    morning = await ratelimit.hit(rt.redis, scope, None, 1, now=evening + 61)
    assert not morning.refused and morning.day.used == 1


async def test_a_refused_call_spends_nothing(rt: Runtime) -> None:
    scope, t0 = f"spend-{time.time_ns()}", 1_800_000_000.0
    await ratelimit.hit(rt.redis, scope, 1, 10, now=t0)
    for i in range(5):
        assert (await ratelimit.hit(rt.redis, scope, 1, 10, now=t0 + 1 + i)).refused == "minute"
    state = await ratelimit.peek(rt.redis, scope, 1, 10, now=t0 + 10)
    assert (state.minute.used, state.day.used) == (1, 1)


async def test_unlimited_plans_are_still_counted(rt: Runtime) -> None:
    scope, t0 = f"pro-{time.time_ns()}", 1_800_000_000.0
    for i in range(3):
        state = await ratelimit.hit(rt.redis, scope, None, None, now=t0 + i)
    assert not state.refused and (state.minute.used, state.day.used) == (3, 3)
    assert state.headers() == {}


async def test_each_websocket_operation_is_a_counted_call(
    http: aiohttp.ClientSession, base_url: str, make_account: Any, make_plan: Any
) -> None:
    plan = await make_plan(calls_per_minute=100, calls_per_day=3)
    acct: Account = await make_account("ws-ops", plan)
    sub, ack = await connect(http, base_url, payload={"apiKey": acct.key})  # call 1
    assert ack["type"] == "connection_ack"
    await subscribe(sub, "query { quota { usedToday } }", {}, op_id="a")  # call 2
    first = await sub.next_message()
    assert first["type"] == "next" and first["payload"]["data"]["quota"]["usedToday"] == 2
    assert (await sub.next_message())["type"] == "complete"
    await subscribe(sub, "query { quota { usedToday } }", {}, op_id="b")  # call 3
    assert (await sub.next_message())["payload"]["data"]["quota"]["usedToday"] == 3
    await sub.next_message()
    await subscribe(sub, "query { quota { usedToday } }", {}, op_id="c")  # refused
    refused = await sub.next_message()
    assert refused["type"] == "error" and refused["payload"][0]["extensions"]["code"] == "RATE_LIMITED"
    await sub.ws.close()


async def test_each_graphql_root_field_is_a_call(
    http: aiohttp.ClientSession, base_url: str, make_account: Any, make_plan: Any
) -> None:
    plan = await make_plan(calls_per_minute=40, calls_per_day=1000)
    acct: Account = await make_account("aliases", plan)
    headers = {"X-API-Key": acct.key}
    many = "{ " + " ".join(f"q{i}: quota {{ usedThisMinute }}" for i in range(30)) + " }"
    async with http.post(f"{base_url}/graphql", json={"query": many}, headers=headers) as r:
        body = await r.json()
    assert "errors" not in body and len(body["data"]) == 30
    async with http.post(
        f"{base_url}/graphql", json={"query": "{ quota { usedThisMinute } }"}, headers=headers
    ) as r:
        used = (await r.json())["data"]["quota"]["usedThisMinute"]
    assert used == 31  # 30 fields, then this one
    # 30 more do not fit in the 9 calls left: refused whole, nothing runs, nothing spent
    async with http.post(f"{base_url}/graphql", json={"query": many}, headers=headers) as r:
        body = await r.json()
    assert body["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert "counts as 29 calls" in body["errors"][0]["extensions"]["hint"]
    assert body.get("data") is None
    async with http.post(
        f"{base_url}/graphql", json={"query": "{ quota { usedThisMinute } }"}, headers=headers
    ) as r:
        assert (await r.json())["data"]["quota"]["usedThisMinute"] == 33  # the refused one: 1

"""Backpressure (issue 8, item 11): the plan's cap on an account's waiting jobs answers 429
with Retry-After, the deployment's queue-depth cap answers 503; neither charges anything."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from saq import Queue

from app.api.server import build_app
from app.runtime import Runtime
from tests.api.test_health_metrics import samples, value
from tests.conftest import Account, GraphQL, operation
from tests.helpers import start_local

CONVERT_FIELDS = {"filetype": "hash", "output_format": "txt"}


@pytest.fixture
async def idle_server(rt: Runtime) -> AsyncIterator[Callable[..., Any]]:
    """The app over a queue of its own that no worker takes from: its jobs stay waiting."""
    started: list[tuple[web.AppRunner, Queue]] = []

    async def start(**settings: Any) -> str:
        queue = Queue.from_url(rt.settings.redis_url, name=f"idle-{uuid.uuid4().hex[:8]}")
        await queue.connect()
        changed = dataclasses.replace(rt, queue=queue, settings=dataclasses.replace(rt.settings, **settings))
        runner, url = await start_local(build_app(changed))
        started.append((runner, queue))
        return url

    yield start
    for runner, queue in started:
        await runner.cleanup()
        await queue.disconnect()


@pytest.fixture
async def accounts(rt: Runtime, make_account: Any) -> AsyncIterator[Callable[..., Any]]:
    """Accounts whose jobs left waiting end failed afterwards (no worker will ever take them)."""
    made: list[int] = []

    async def make(*args: Any) -> Account:
        acct: Account = await make_account(*args)
        made.append(acct.account_id)
        return acct

    yield make
    await rt.pool.execute(
        "UPDATE jobs SET status = 'failed', finished_at = now() WHERE account_id = ANY($1)"
        " AND status IN ('pending', 'processing')",
        made,
    )


async def convert(http: aiohttp.ClientSession, base: str, acct: Account) -> tuple[int, dict[str, Any], Any]:
    form = aiohttp.FormData()
    form.add_field("file", b"abc", filename="a.txt")
    for name, v in CONVERT_FIELDS.items():
        form.add_field(name, v)
    async with http.post(f"{base}/v1/convert", headers={"X-API-Key": acct.key}, data=form) as r:
        return r.status, await r.json(), r.headers


async def charged(rt: Runtime, acct: Account) -> int:
    return await rt.pool.fetchval("SELECT conversions_used FROM accounts WHERE id = $1", acct.account_id)


async def test_an_accounts_waiting_jobs_are_capped_with_429_and_retry_after(
    http: aiohttp.ClientSession, rt: Runtime, idle_server: Any, accounts: Any, make_plan: Any, gql: GraphQL
) -> None:
    plan = await make_plan(max_pending=2)
    acct, neighbour = await accounts("flooder", plan), await accounts("neighbour", plan)
    base = await idle_server()
    before = samples(await (await http.get(f"{base}/metrics")).text())
    accepted = [await convert(http, base, acct) for _ in range(2)]
    assert [status for status, _, _ in accepted] == [202, 202]

    status, body, headers = await convert(http, base, acct)
    assert (status, body["error_code"]) == (429, "TOO_MANY_PENDING")
    assert headers["Retry-After"] == "10"
    assert "2 jobs waiting" in body["message"] and "allows 2" in body["message"]
    assert "Retry-After" in body["hint"]
    assert await charged(rt, acct) == 2  # the refused one cost nothing
    # GraphQL refuses the same way
    form = aiohttp.FormData()
    form.add_field("operations", json.dumps({"query": operation("Convert"), "variables": {
        "input": {"filetype": "hash", "outputFormat": "txt", "file": None}}}))  # fmt: skip
    form.add_field("map", json.dumps({"0": ["variables.input.file"]}))
    form.add_field("0", b"abc", filename="a.txt")
    async with http.post(f"{base}/graphql", data=form, headers={"X-API-Key": acct.key}) as r:
        got = await r.json()
        assert r.headers["Retry-After"] == "10"  # as on REST
    assert got["errors"][0]["extensions"]["code"] == "TOO_MANY_PENDING"
    assert got["errors"][0]["extensions"]["status"] == 429
    # per account: the plan's other account still converts
    assert (await convert(http, base, neighbour))[0] == 202
    # once one of the waiting jobs is gone, there is room again
    first_job = accepted[0][1]["job_id"]
    async with http.post(f"{base}/v1/cancel/{first_job}", headers={"X-API-Key": acct.key}) as r:
        assert r.status == 200
    assert (await convert(http, base, acct))[0] == 202
    after = samples(await (await http.get(f"{base}/metrics")).text())
    grew = value(after, "convertd_backpressure_refusals_total", reason="pending") - value(
        before, "convertd_backpressure_refusals_total", reason="pending"
    )
    assert grew == 2


async def test_a_running_job_does_not_count_as_waiting(
    http: aiohttp.ClientSession, rt: Runtime, idle_server: Any, accounts: Any, make_plan: Any
) -> None:
    acct = await accounts("busy", await make_plan(max_pending=1))
    base = await idle_server()
    status, body, _ = await convert(http, base, acct)
    assert status == 202
    assert (await convert(http, base, acct))[0] == 429
    await rt.pool.execute("UPDATE jobs SET status = 'processing' WHERE id = $1", uuid.UUID(body["job_id"]))
    assert (await convert(http, base, acct))[0] == 202


async def test_the_global_queue_depth_cap_answers_503_for_everyone(
    http: aiohttp.ClientSession, rt: Runtime, idle_server: Any, accounts: Any
) -> None:
    first, second = await accounts("first"), await accounts("second")
    base = await idle_server(max_queue_depth=2)
    assert (await convert(http, base, first))[0] == 202
    assert (await convert(http, base, second))[0] == 202
    for acct in (first, second):
        status, body, headers = await convert(http, base, acct)
        assert (status, body["error_code"], headers["Retry-After"]) == (503, "OVERLOADED", "30")
        assert "2 jobs are waiting" in body["message"] and "Try again" in body["hint"]
    assert await charged(rt, first) == 1 and await charged(rt, second) == 1
    # the rest of the service answers as usual meanwhile
    async with http.get(f"{base}/v1/keys/me", headers={"X-API-Key": first.key}) as r:
        assert r.status == 200
    # 0 switches the cap off
    uncapped = await idle_server(max_queue_depth=0)
    results = await asyncio.gather(*(convert(http, uncapped, first) for _ in range(3)))
    assert [status for status, _, _ in results] == [202, 202, 202]


async def test_a_concurrent_flood_gets_exactly_the_cap_and_pays_only_for_it(
    http: aiohttp.ClientSession, rt: Runtime, idle_server: Any, accounts: Any, make_plan: Any
) -> None:
    acct = await accounts("burst", await make_plan(max_pending=3))
    bystander = await accounts("bystander")
    base = await idle_server()
    flood = [convert(http, base, acct) for _ in range(30)]
    results = await asyncio.gather(*flood, convert(http, base, bystander))
    statuses = [status for status, _, _ in results[:-1]]
    assert statuses.count(202) == 3 and statuses.count(429) == 27
    assert results[-1][0] == 202  # the flood did not take the service away from others
    assert await charged(rt, acct) == 3  # refusals are refunded, also those refused at the lock
    kept = await rt.pool.fetch("SELECT storage_path FROM uploads WHERE account_id = $1", acct.account_id)
    assert len(kept) == 3  # and their uploads deleted, rows and files
    assert len(list(rt.storage.path(f"uploads/{acct.account_id}").rglob("a.txt"))) == 3

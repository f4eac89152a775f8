"""Each key's calls are counted in memory and written in batches (app/services/key_calls.py):
every call still counts, readers see their own calls, and a revoked key is still refused
from the very next call (the key is read fresh on every call, only the count waits)."""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg

from app.runtime import Runtime
from app.services.accounts import issue_master_token
from tests.conftest import Account
from tests.helpers import wait_until


async def _formats(http: aiohttp.ClientSession, base_url: str, key: str) -> int:
    async with http.get(f"{base_url}/v1/formats", headers={"X-API-Key": key}) as r:
        await r.read()
        return r.status


async def _stored(rt: Runtime, key_id: int) -> asyncpg.Record:
    # on a connection of its own, as another process or the CLI reads it: no flush first
    conn = await asyncpg.connect(rt.settings.database_url)
    try:
        row = await conn.fetchrow("SELECT usage_count, last_used_at FROM api_keys WHERE id = $1", key_id)
    finally:
        await conn.close()
    assert row is not None
    return row


async def test_calls_at_once_with_one_key_are_all_counted_and_reach_the_database(
    http: aiohttp.ClientSession, base_url: str, rt: Runtime, account: Account
) -> None:
    before = await _stored(rt, account.key_id)
    statuses = await asyncio.gather(*(_formats(http, base_url, account.key) for _ in range(25)))
    assert statuses == [200] * 25
    # written by the batch in the background, without any reader asking for a flush
    after = await wait_until(
        lambda: _at_least(rt, account.key_id, before["usage_count"] + 25), 10, "the batch write"
    )
    assert after["usage_count"] == before["usage_count"] + 25
    assert after["last_used_at"] is not None
    assert before["last_used_at"] is None or after["last_used_at"] > before["last_used_at"]


async def _at_least(rt: Runtime, key_id: int, calls: int) -> asyncpg.Record | None:
    row = await _stored(rt, key_id)
    return row if row["usage_count"] >= calls else None


async def test_readers_see_every_call_made_so_far(
    http: aiohttp.ClientSession, base_url: str, rt: Runtime, account: Account
) -> None:
    headers = {"X-API-Key": account.key}
    async with http.get(f"{base_url}/v1/keys/me", headers=headers) as r:
        first = (await r.json())["usage_count"]
    for _ in range(3):
        assert await _formats(http, base_url, account.key) == 200
    # the key list (with the master token: its calls count on no key) flushes this
    # process's counts before reading, as the consumption view does
    master = {"Authorization": f"Bearer {await issue_master_token(rt.pool, account.account_id)}"}
    async with http.get(f"{base_url}/v1/account/keys", headers=master) as r:
        listed = {k["key_id"]: k["usage_count"] for k in (await r.json())["keys"]}
    assert listed[account.key_id] == first + 3
    async with http.get(f"{base_url}/v1/account/consumption", headers=master) as r:
        consumed = {k["key_id"]: k["usage_count"] for k in (await r.json())["keys"]}
    assert consumed[account.key_id] == first + 3
    async with http.get(f"{base_url}/v1/keys/me", headers=headers) as r:
        assert (await r.json())["usage_count"] == first + 4  # this call too


async def test_a_revoked_key_is_refused_at_once_with_its_calls_still_counted(
    http: aiohttp.ClientSession, base_url: str, rt: Runtime, account: Account
) -> None:
    before = await _stored(rt, account.key_id)
    assert await _formats(http, base_url, account.key) == 200  # cached, counted in memory
    conn = await asyncpg.connect(rt.settings.database_url)
    try:
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", account.key_id)
    finally:
        await conn.close()
    assert await _formats(http, base_url, account.key) == 401
    await rt.key_calls.flush()
    # the call admitted before the revocation is counted, the refused one is not
    assert (await _stored(rt, account.key_id))["usage_count"] == before["usage_count"] + 1

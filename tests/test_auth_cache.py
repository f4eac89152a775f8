"""Keys are remembered for a few seconds, and forgotten at once when anything about them
changes, whoever changes it (the API, the CLI, plain SQL on another connection)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import asyncpg

from app.runtime import Runtime
from app.services import keys as keys_service
from tests.conftest import Account
from tests.helpers import wait_until
from tests.test_secret_rotation import self_signed


async def _status(http: aiohttp.ClientSession, base_url: str, key: str) -> int:
    async with http.get(f"{base_url}/v1/keys/me", headers={"X-API-Key": key}) as r:
        return r.status


async def _refused_soon(http: aiohttp.ClientSession, base_url: str, key: str, status: int) -> int:
    """How many calls after the change still passed: none (the call that counts the key
    reads it fresh, whether or not the change's notification has arrived)."""
    for passed in range(20):
        if await _status(http, base_url, key) == status:
            return passed
        await asyncio.sleep(0.01)
    raise AssertionError("the change never reached the API")


async def test_a_key_revoked_by_another_writer_is_refused_at_once(
    http: aiohttp.ClientSession, base_url: str, rt: Runtime, account: Account
) -> None:
    assert await _status(http, base_url, account.key) == 200  # now in the cache
    assert rt.auth_cache is not None and rt.auth_cache.live
    conn = await asyncpg.connect(rt.settings.database_url)  # as the CLI or an operator would
    try:
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", account.key_id)
    finally:
        await conn.close()
    assert await _refused_soon(http, base_url, account.key, 401) == 0


async def test_plan_and_account_changes_apply_at_once(
    http: aiohttp.ClientSession, base_url: str, rt: Runtime, make_account: Any, make_plan: Any
) -> None:
    plan = await make_plan(api_access=True)
    acct: Account = await make_account("cache-plan", plan=plan)
    assert await _status(http, base_url, acct.key) == 200
    await rt.pool.execute("UPDATE plans SET api_access = false WHERE name = $1", plan)
    assert await _refused_soon(http, base_url, acct.key, 403) == 0
    await rt.pool.execute("UPDATE plans SET api_access = true WHERE name = $1", plan)
    # a refusal never reaches the fresh read: one lifted is heard through the notification,
    # which may land a moment after the next call
    assert await _refused_soon(http, base_url, acct.key, 200) <= 1
    await rt.pool.execute("UPDATE accounts SET active = false WHERE id = $1", acct.account_id)
    assert await _refused_soon(http, base_url, acct.key, 401) == 0


async def test_counters_stay_exact_through_the_cache(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    seen = []
    for _ in range(3):
        async with http.get(f"{base_url}/v1/keys/me", headers={"X-API-Key": account.key}) as r:
            seen.append((await r.json())["usage_count"])
    assert seen == [seen[0], seen[0] + 1, seen[0] + 2]


async def test_a_jwt_of_a_rotated_secret_is_refused_while_the_cache_still_holds_the_old_key(
    http: aiohttp.ClientSession, base_url: str, rt: Runtime, account: Account
) -> None:
    # the moment between a rotation and its notification, made to last: the old key is put
    # back into the cache after the rotation, as if the NOTIFY had not arrived yet
    cache = rt.auth_cache
    assert cache is not None and cache.live
    old = self_signed(account, account.signing_secret)
    headers = {"Authorization": f"Bearer {old}"}
    async with http.get(f"{base_url}/v1/keys/me", headers=headers) as r:
        assert r.status == 200
    entry = ("key_by_kid", uuid.UUID(account.kid))
    stale = cache.get(entry)
    assert stale is not None, "the key should be cached after a call"
    await keys_service.rotate_secret(rt.pool, account.account_id, account.key_id, "jwt", rt.settings.secret)
    await wait_until(lambda: cache.get(entry) is None, 10, "the rotation's notification cleared the cache")
    cache.put(entry, stale, cache.generation)
    assert cache.get(entry) is stale
    async with http.get(f"{base_url}/v1/keys/me", headers=headers) as r:
        body = await r.json()
    assert r.status == 401 and body["error_code"] == "UNAUTHENTICATED", body

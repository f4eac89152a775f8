"""Every refusal in the shared error shape, with the ConvertAPI v1 numeric codes where they apply."""

from __future__ import annotations

from typing import Any

import aiohttp

from app.runtime import Runtime
from tests.conftest import Account
from tests.transports import everywhere


async def test_no_credentials_4013_and_bad_secret_4010_on_every_transport(
    http: aiohttp.ClientSession, base_url: str
) -> None:
    for credential, legacy, words in ((None, 4013, "No API key"), ("sk_live_nope", 4010, "not valid")):
        for o in await everywhere(http, base_url, credential):
            assert (o.status, o.code, o.legacy) == (401, "UNAUTHENTICATED", legacy), o
            assert words in (o.message or "") and o.hint, o


async def test_an_inactive_account_is_4014_on_every_transport(
    http: aiohttp.ClientSession, base_url: str, rt: Runtime, make_account: Any
) -> None:
    acct: Account = await make_account("sleeping")
    await rt.pool.execute("UPDATE accounts SET active = false WHERE id = $1", acct.account_id)
    for o in await everywhere(http, base_url, acct.key):
        assert (o.status, o.code, o.legacy) == (401, "UNAUTHENTICATED", 4014), o


async def test_rest_error_body_is_the_documents_shape(http: aiohttp.ClientSession, base_url: str) -> None:
    async with http.get(f"{base_url}/v1/keys/me", headers={"X-API-Key": "sk_live_nope"}) as r:
        body = await r.json()
    assert r.status == 401
    assert body == {
        "error": "Unauthorized",
        "message": "The API key is not valid.",
        "hint": "Check that the key is complete and has not been revoked.",
        "error_code": "UNAUTHENTICATED",
        "code": 4010,
    }

"""A key's JWT signing secret and webhook secret are its own, and each can be rotated
without revoking the key (master token, GraphQL, REST and CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import aiohttp
import jwt
import pytest

from app.runtime import Runtime
from app.services.accounts import issue_master_token
from tests.conftest import Account, GraphQL
from tests.helpers import Receiver, queue_tiny_job, signed_by

ROTATE = """
mutation Rotate($id: Int!, $secret: KeySecret!) {
  rotateKeySecret(id: $id, secret: $secret) { secret apiKey { id kid } }
}
"""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def self_signed(acct: Account, secret: str) -> str:
    return jwt.encode({"kid": acct.kid, "exp": int(time.time()) + 600}, secret, algorithm="HS256")


async def _me(http: aiohttp.ClientSession, base_url: str, headers: dict[str, str]) -> int:
    async with http.get(f"{base_url}/v1/keys/me", headers=headers) as r:
        return r.status


@pytest.fixture
async def admin(rt: Runtime, make_account: Any) -> tuple[Account, str]:
    acct: Account = await make_account("rotator", "pro")
    return acct, await issue_master_token(rt.pool, acct.account_id)


async def test_rotating_the_jwt_secret_refuses_old_tokens_and_keeps_the_key(
    http: aiohttp.ClientSession, base_url: str, gql: GraphQL, admin: tuple[Account, str]
) -> None:
    acct, master = admin
    old = self_signed(acct, acct.signing_secret)
    assert await _me(http, base_url, bearer(old)) == 200

    body = await gql(ROTATE, {"id": acct.key_id, "secret": "JWT"}, headers=bearer(master))
    assert "errors" not in body, body
    rotated = body["data"]["rotateKeySecret"]
    assert rotated["apiKey"]["kid"] == acct.kid and rotated["secret"] != acct.signing_secret

    assert await _me(http, base_url, bearer(old)) == 401  # every node drops it at once
    assert await _me(http, base_url, bearer(self_signed(acct, rotated["secret"]))) == 200
    assert await _me(http, base_url, {"X-API-Key": acct.key}) == 200  # the key itself lives on
    # server-minted tokens are signed with the new secret too
    mint = {"Kid": acct.kid, "ExpiresInSec": 600}
    async with http.post(f"{base_url}/v1/token/jwt", headers=bearer(acct.key), json=mint) as r:
        minted = (await r.json())["token"]
    jwt.decode(minted, rotated["secret"], algorithms=["HS256"])


async def test_rotating_the_webhook_secret_over_rest(
    http: aiohttp.ClientSession,
    base_url: str,
    admin: tuple[Account, str],
    receiver: Receiver,
) -> None:
    acct, master = admin
    url = f"{base_url}/v1/account/keys/{acct.key_id}/rotate"
    async with http.post(url, json={"secret": "webhook"}, headers=bearer(master)) as r:
        assert r.status == 200, await r.text()
        rotated = await r.json()
    assert rotated["rotated"] == "webhook" and rotated["kid"] == acct.kid
    new = rotated["secret"]
    assert new not in (acct.webhook_secret, acct.signing_secret)

    await queue_tiny_job(http, base_url, acct.key, b"hook", output_format="json", webhook_url=receiver.url)
    await receiver.until_called(1)
    headers, body = receiver.calls[0]
    assert signed_by(new, headers, body) and not signed_by(acct.webhook_secret, headers, body)
    # the JWT secret did not change with it
    assert await _me(http, base_url, bearer(self_signed(acct, acct.signing_secret))) == 200

    async with http.post(url, json={"secret": "password"}, headers=bearer(master)) as r:
        assert r.status == 400 and "jwt" in (await r.json())["hint"]


async def test_a_key_cannot_rotate_secrets(
    http: aiohttp.ClientSession, base_url: str, gql: GraphQL, admin: tuple[Account, str]
) -> None:
    acct, _ = admin
    body = await gql(ROTATE, {"id": acct.key_id, "secret": "JWT"}, key=acct.key)
    assert body["errors"][0]["extensions"]["status"] == 403, body
    url = f"{base_url}/v1/account/keys/{acct.key_id}/rotate"
    async with http.post(url, json={"secret": "jwt"}, headers={"X-API-Key": acct.key}) as r:
        assert r.status == 403
    assert await _me(http, base_url, bearer(self_signed(acct, acct.signing_secret))) == 200


def test_cli_rotates_a_secret(settings: Any, rt: Runtime) -> None:
    env = {
        "CONVERTD_DATA_DIR": str(settings.data_dir),
        "CONVERTD_DATABASE_URL": settings.database_url,
        "CONVERTD_REDIS_URL": settings.redis_url,
        "CONVERTD_SECRET": settings.secret,
        "PATH": "/usr/bin:/bin",
    }
    cli = [sys.executable, "-m", "app.cli", "keys"]
    out = subprocess.run([*cli, "create", "--name", "cli-rot", "--json"], env=env,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    made = json.loads(out.splitlines()[-1])
    assert made["webhook_secret"] and made["webhook_secret"] != made["signing_secret"]
    out = subprocess.run([*cli, "rotate", str(made["key_id"]), "--secret", "jwt", "--json"], env=env,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    rotated = json.loads(out.splitlines()[-1])
    assert rotated["kid"] == made["kid"] and rotated["secret"] not in (made["signing_secret"], "")

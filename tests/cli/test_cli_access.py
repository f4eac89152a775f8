"""The operator's command line: plans set/list, keys create/list/rename/revoke, master tokens."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import jwt
import pytest

from app import cli
from app.config import Settings
from tests.transports import call

Run = Callable[..., Awaitable[str]]


@pytest.fixture
def convertd(settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """`convertd ARGS...` against the test servers; returns what it printed."""
    monkeypatch.setenv("CONVERTD_DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("CONVERTD_REDIS_URL", settings.redis_url or "")
    monkeypatch.setenv("CONVERTD_SECRET", settings.secret)
    monkeypatch.setenv("CONVERTD_DATA_DIR", str(settings.data_dir))

    async def run(*argv: str) -> str:
        capsys.readouterr()
        await asyncio.to_thread(cli.main, list(argv))
        return capsys.readouterr().out

    return run


async def test_plans_out_of_the_box_have_the_documents_figures(convertd: Run) -> None:
    plans = {p["name"]: p for p in json.loads(await convertd("plans", "list", "--json"))}
    assert plans["free"]["api_access"] is False
    figures = {n: (p["api_access"], p["calls_per_day"], p["calls_per_minute"]) for n, p in plans.items()}
    assert figures["basic"] == (True, 2000, 60)
    assert figures["pro"] == (True, None, None)
    table = await convertd("plans", "list")
    assert "basic" in table and "2,000" in table and "unlimited" in table


async def test_plans_set_creates_and_changes_only_what_it_is_told(convertd: Run) -> None:
    out = json.loads(
        await convertd(
            "plans",
            "set",
            "cli-gold",
            "--api-access",
            "on",
            "--calls-per-day",
            "500",
            "--calls-per-minute",
            "unlimited",
            "--max-file-size",
            "1048576",
            "--conversions",
            "10",
            "--json",
        )
    )
    assert out == [
        {
            "name": "cli-gold",
            "api_access": True,
            "calls_per_day": 500,
            "calls_per_minute": None,
            "max_file_size": 1048576,
            "conversions": 10,
            "retention": None,
            "storage_quota": None,
            "max_pending": None,
            "max_running": None,
        }
    ]
    out = json.loads(await convertd("plans", "set", "cli-gold", "--api-access", "off", "--json"))
    assert out[0]["api_access"] is False and out[0]["calls_per_day"] == 500 and out[0]["conversions"] == 10
    with pytest.raises(SystemExit):
        await convertd("plans", "set", "cli-gold", "--calls-per-day", "lots")


async def test_keys_create_json_carries_key_kid_and_signing_secret_and_the_key_works(
    convertd: Run, http: aiohttp.ClientSession, base_url: str
) -> None:
    out = json.loads(
        await convertd(
            "keys",
            "create",
            "--name",
            "ci",
            "--plan",
            "basic",
            "--env",
            "test",
            "--ip",
            "127.0.0.1",
            "--ip",
            "2001:db8::/32",
            "--endpoint",
            "/v1/keys/me",
            "--json",
        )
    )
    assert out["key"].startswith("sk_test_") and out["prefix"].startswith("sk_test_")
    assert out["environment"] == "test" and out["plan"] == "basic"
    assert out["restriction_type"] == "ip" and out["allowed_ips"] == ["127.0.0.1/32", "2001:db8::/32"]
    assert out["allowed_endpoints"] == ["/v1/keys/me"] and out["kid"] and out["signing_secret"]
    assert (await call("rest", http, base_url, out["key"])).ok
    refused = await call("rest", http, base_url, out["key"], path="/v1/formats")
    assert (refused.status, refused.code) == (403, "FORBIDDEN")
    # the signing secret signs a JWT the service accepts
    exp = int(time.time()) + 600
    token = jwt.encode({"kid": out["kid"], "exp": exp}, out["signing_secret"], algorithm="HS256")
    assert (await call("rest", http, base_url, token)).ok


async def test_keys_create_domain_restricted_and_for_an_existing_account(convertd: Run) -> None:
    first = json.loads(await convertd("keys", "create", "--name", "site", "--json"))
    second = json.loads(
        await convertd(
            "keys",
            "create",
            "--name",
            "site-2",
            "--account",
            str(first["account_id"]),
            "--domain",
            "example.com",
            "--domain",
            "*.example.org",
            "--json",
        )
    )
    assert second["account_id"] == first["account_id"]
    assert second["restriction_type"] == "domain"
    assert second["allowed_domains"] == ["example.com", "*.example.org"]
    with pytest.raises(SystemExit):
        await convertd("keys", "create", "--name", "bad", "--ip", "not-an-ip")
    with pytest.raises(SystemExit):
        await convertd("keys", "create", "--name", "both", "--ip", "10.0.0.1", "--domain", "example.com")


async def test_keys_list_rename_and_revoke(convertd: Run, http: aiohttp.ClientSession, base_url: str) -> None:
    created: dict[str, Any] = json.loads(await convertd("keys", "create", "--name", "to-revoke", "--json"))
    listed = json.loads(await convertd("keys", "list", "--account", str(created["account_id"]), "--json"))
    assert [k["key_id"] for k in listed] == [created["key_id"]]
    assert "key" not in listed[0] and "signing_secret" not in listed[0]
    assert "to-revoke" in await convertd("keys", "list")
    await convertd("keys", "rename", str(created["key_id"]), "renamed")
    listed = json.loads(await convertd("keys", "list", "--account", str(created["account_id"]), "--json"))
    assert listed[0]["name"] == "renamed"

    assert (await call("rest", http, base_url, created["key"])).ok
    await convertd("keys", "revoke", str(created["key_id"]))
    for transport in ("rest", "graphql", "websocket"):
        refused = await call(transport, http, base_url, created["key"])
        assert (refused.status, refused.code, refused.legacy) == (401, "UNAUTHENTICATED", 4010)
        assert "revoked" in (refused.message or "")


async def test_accounts_master_token_issues_a_working_admin_token(
    convertd: Run, http: aiohttp.ClientSession, base_url: str
) -> None:
    created = json.loads(await convertd("keys", "create", "--name", "admin-cli", "--json"))
    token = json.loads(await convertd("accounts", "master-token", str(created["account_id"]), "--json"))
    assert token["master_token"].startswith("mt_")
    headers = {"Authorization": f"Bearer {token['master_token']}"}
    async with http.get(f"{base_url}/v1/account", headers=headers) as r:
        assert r.status == 200 and (await r.json())["account"]["account_id"] == created["account_id"]


@pytest.mark.parametrize(
    "argv",
    [
        ("keys", "revoke", "2000000000"),
        ("keys", "rename", "2000000000", "nobody"),
        ("keys", "rotate", "2000000000", "--secret", "jwt"),
        ("keys", "jwt", "2000000000"),
        ("keys", "create", "--name", "orphan", "--account", "2000000000"),
        ("accounts", "master-token", "2000000000"),
    ],
)
async def test_a_refused_operator_command_exits_with_its_error_and_hint(
    convertd: Run, argv: tuple[str, ...]
) -> None:
    with pytest.raises(SystemExit) as exited:
        await convertd(*argv)
    message = str(exited.value.code)
    assert message.startswith("error: ") and "\nhint: " in message, message

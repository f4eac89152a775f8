"""The small holes of the security review: each answers as the access rules say."""

from __future__ import annotations

from typing import Any

import aiohttp

from app.runtime import Runtime
from app.services.accounts import issue_master_token
from app.storage import safe_filename
from tests.conftest import Account, GraphQL, wait_for_status
from tests.helpers import queue_tiny_job
from tests.transports import call


async def test_a_non_ascii_signature_is_a_403_not_a_500(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    job_id = await queue_tiny_job(http, base_url, account.key)
    status = await wait_for_status(http, base_url, account.key, job_id)
    url = status["download_url"].split("signature=")[0] + "signature=%C3%A9%E2%80%AE"
    async with http.get(url) as r:
        assert r.status == 403
        assert (await r.json())["hint"]


async def test_an_appended_forwarded_proto_is_read_from_our_proxys_end(
    http: aiohttp.ClientSession, make_server: Any, account: Account
) -> None:
    trusted = await make_server(require_https=True, trusted_proxies=("127.0.0.1",))
    # the client wrote "https"; our proxy appended what it really saw: plain http
    forged = {"X-Forwarded-Proto": "https, http"}
    assert (await call("rest", http, trusted, account.key, headers=forged)).code == "HTTPS_REQUIRED"
    assert (await call("rest", http, trusted, account.key, headers={"X-Forwarded-Proto": "http, https"})).ok


def test_file_names_lose_bidi_and_other_format_characters() -> None:
    assert safe_filename("invoice\u202egpj.exe") == "invoicegpj.exe"
    assert safe_filename("a\u200bb\u2066c.txt") == "abc.txt"
    assert safe_filename("\u202e") == "file"
    assert safe_filename("Ünïcødé 文件.pdf") == "Ünïcødé 文件.pdf"


async def test_the_master_token_is_refused_in_a_url(
    http: aiohttp.ClientSession, base_url: str, rt: Runtime, account: Account
) -> None:
    master = await issue_master_token(rt.pool, account.account_id)
    for name in ("api_key", "Token", "Secret"):
        async with http.get(f"{base_url}/v1/account", params={name: master}) as r:
            assert r.status == 401, name
            body = await r.json()
            assert "never accepted in a URL" in body["message"] and "Bearer" in body["hint"]
    async with http.get(f"{base_url}/v1/account", headers={"Authorization": f"Bearer {master}"}) as r:
        assert r.status == 200
    # the documented query-string credentials stay for API keys
    async with http.get(f"{base_url}/v1/keys/me", params={"api_key": account.key}) as r:
        assert r.status == 200


async def test_introspection_and_graphiql_can_be_switched_off(
    http: aiohttp.ClientSession, make_server: Any, account: Account
) -> None:
    closed = await make_server(introspection=False)
    gql = GraphQL(http, closed)
    body = await gql("{ __schema { queryType { name } } }", key=account.key)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "Introspection is switched off" in body["errors"][0]["message"]
    body = await gql('{ __type(name: "Job") { name } }', key=account.key)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert (await gql("{ __typename formats { filetype } }", key=account.key))["data"]["formats"]
    async with http.get(f"{closed}/graphql", headers={"Accept": "text/html"}) as r:
        assert r.status == 404
    opened = await make_server()
    body = await GraphQL(http, opened)("{ __schema { queryType { name } } }", key=account.key)
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"
    async with http.get(f"{opened}/graphql", headers={"Accept": "text/html"}) as r:
        assert r.status == 200 and "graphiql" in (await r.text()).lower()

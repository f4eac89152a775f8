"""What a GraphQL document may cost: keyless callers are refused before their document is
read, and a valid caller's document is bounded in bytes, tokens and fields; a malformed
request is refused in the GraphQL error shape, with a hint."""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import aiohttp
import pytest

from tests.conftest import Account, GraphQL


def _huge_document(fields: int = 200_000) -> str:
    return "{ " + " ".join(f"f{i}: __typename" for i in range(fields)) + " }"


async def test_a_keyless_two_mib_document_is_refused_before_it_is_parsed(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    document = json.dumps({"query": _huge_document()}).encode()
    assert len(document) > 2 * 1024**2 - 400_000
    headers = {"Content-Type": "application/json"}

    async def flood() -> list[float]:
        took = []
        for _ in range(5):
            started = time.perf_counter()
            async with http.post(f"{base_url}/graphql", data=document, headers=headers) as r:
                assert r.status == 401
                body = await r.json()
                assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
                assert body["errors"][0]["extensions"]["hint"]
            took.append(time.perf_counter() - started)
        return took

    async def others() -> list[int]:
        statuses = []
        for _ in range(10):
            async with http.get(f"{base_url}/v1/formats", headers={"X-API-Key": account.key}) as r:
                statuses.append(r.status)
        return statuses

    took, statuses = await asyncio.gather(flood(), others())
    assert statuses == [200] * 10
    # parsing this document took ~15 s of CPU; refusing it reads headers only (the median:
    # one slow answer on a loaded machine is scheduling, not parsing)
    assert statistics.median(took) < 0.3, took


async def test_a_valid_callers_document_is_bounded(
    gql: GraphQL, http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    headers = {"X-API-Key": account.key}
    # bytes: refused from the Content-Length, with a hint
    async with http.post(f"{base_url}/graphql", json={"query": _huge_document()}, headers=headers) as r:
        assert r.status == 413
        err = (await r.json())["errors"][0]
        assert err["extensions"]["code"] == "PAYLOAD_TOO_LARGE" and err["extensions"]["hint"]
    # tokens: a document under the byte limit with too many tokens
    body = await gql("{ " + "__typename " * 6000 + "}", key=account.key)
    assert "tokens" in body["errors"][0]["message"].lower()
    assert "5,000 tokens" in body["errors"][0]["extensions"]["hint"]
    # fields: fragments spread into each other multiply; the count follows the spreads
    fragments = ["fragment F0 on Query { __typename }"] + [
        f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 12)
    ]
    query = "query { ...F11 }\n" + "\n".join(fragments)
    body = await gql(query, key=account.key)
    assert [e["message"] for e in body["errors"]] == ["The operation selects more than 1000 fields."]
    # an ordinary document still runs
    body = await gql("{ formats { filetype } }", key=account.key)
    assert "errors" not in body and body["data"]["formats"]


@pytest.mark.parametrize(
    ("body", "content_type", "message", "hint"),
    [
        ("garbage", "application/json", "Unable to parse request body as JSON", "JSON object"),
        ("{}", "application/json", "No GraphQL query found", '"query"'),
        ("[]", "application/json", "Batching is not enabled", "one operation"),
        ('{"query": "{ me { name } }"}', "text/plain", "Unsupported content type", "application/json"),
        ('{"query": "{ me { name } }", "variables": "x"}', "application/json", "`variables`", "JSON object"),
        (
            '{"query": "{ me { name } }", "operationName": "X"}',
            "application/json",
            "Unknown operation",
            "operationName",
        ),
    ],
)
async def test_a_malformed_request_is_a_graphql_error_body_with_a_hint(
    http: aiohttp.ClientSession,
    base_url: str,
    account: Account,
    body: str,
    content_type: str,
    message: str,
    hint: str,
) -> None:
    """Not Strawberry's plain-text line: the same JSON error shape as every other refusal."""
    headers = {"X-API-Key": account.key, "Content-Type": content_type}
    async with http.post(f"{base_url}/graphql", data=body, headers=headers) as r:
        assert r.status == 400 and r.content_type == "application/json"
        [err] = (await r.json())["errors"]
    assert message in err["message"] and hint in err["extensions"]["hint"]
    assert (err["extensions"]["code"], err["extensions"]["status"]) == ("BAD_REQUEST", 400)


async def test_a_mutation_over_get_is_a_graphql_error_body(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    query = {"query": 'mutation { deleteJob(id: "x") { id } }'}
    async with http.get(f"{base_url}/graphql", params=query, headers={"X-API-Key": account.key}) as r:
        assert r.status == 400
        [err] = (await r.json())["errors"]
    assert "POST" in err["extensions"]["hint"]


@pytest.mark.parametrize(
    ("document", "message", "hint"),
    [
        ("{ formats {", "Syntax Error", "not valid GraphQL"),
        ("{ nope }", "Cannot query field 'nope'", "against the schema"),
        ("{ formats { filetype nope } }", "Cannot query field 'nope'", "against the schema"),
    ],
)
async def test_graphql_own_refusals_carry_a_code_and_a_hint(
    gql: GraphQL, account: Account, document: str, message: str, hint: str
) -> None:
    """Syntax and validation errors read like every other refusal: code, status, hint."""
    [err] = (await gql(document, key=account.key))["errors"]
    assert message in err["message"] and err["locations"]
    assert err["extensions"]["code"] == "BAD_REQUEST" and err["extensions"]["status"] == 400
    assert hint in err["extensions"]["hint"]

"""GET /v1/openapi.json: a valid OpenAPI 3.1 document, describing every route, that the live
service keeps to (schemathesis 4.32, pinned: its Python API changes between versions).

The fuzzing is bounded (MAX_EXAMPLES per operation, no shrinking, derandomized so a CI run
is the same run every time) and runs in a thread: schemathesis calls with `requests`,
synchronously, and the server shares this test's event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

from app.api.openapi import document as openapi
from app.api.server import build_app
from app.runtime import Runtime
from app.services.accounts import issue_master_token
from tests.conftest import Account

MAX_EXAMPLES = 10
# no 5xx (a 503 is documented: a server out of reach) and nothing the document does not say
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# tus's PATCH body is raw bytes in a media type schemathesis does not know
schemathesis.openapi.media_type("application/offset+octet-stream", st.binary(max_size=512))
# refreshing the master token would end the fuzzing run's own credential
NOT_FUZZED = {("POST", "/v1/account/master-token")}


async def fetch_document(http: aiohttp.ClientSession, base_url: str) -> dict[str, Any]:
    async with http.get(f"{base_url}/v1/openapi.json") as r:
        assert r.status == 200 and r.content_type == "application/json"
        return await r.json()


async def test_the_document_is_valid_openapi_3_1(http: aiohttp.ClientSession, base_url: str) -> None:
    doc = await fetch_document(http, base_url)
    validate(doc)  # raises on any departure from the 3.1 schema
    assert doc["openapi"] == "3.1.0" and doc["servers"] == [{"url": base_url}]
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["ApiKeyQuery"]["in"] == "query" and schemes["ApiKeyQuery"]["name"] == "api_key"
    assert schemes["Bearer"]["scheme"] == "bearer"
    assert set(doc["components"]["schemas"]["Error"]["required"]) == {"error", "message", "hint"}


async def test_every_route_is_described(rt: Runtime) -> None:
    served = openapi.served(build_app(rt))
    described = openapi.documented(openapi.document())
    assert served - described == set(), "routes without a description in app/api/openapi/"
    assert described - served == set(), "described routes the application does not serve"
    # the seed document's /v1 routes are all there
    seed = {"/v1/", "/v1/formats", "/v1/upload", "/v1/convert", "/v1/status/{job_id}"}
    assert seed | {"/v1/download/{job_id}", "/v1/keys/me"} <= {path for _, path in described}


async def test_documented_errors_are_what_the_service_answers(
    http: aiohttp.ClientSession, base_url: str
) -> None:
    """One real error of each common kind validates against the Error schema."""
    import jsonschema

    doc = await fetch_document(http, base_url)
    error = {**doc["components"]["schemas"]["Error"], "$defs": {}}
    for path, headers in [
        ("/v1/formats", {}),  # 401, no key
        ("/v1/status/nope", {"X-API-Key": "wrong"}),  # 401, code 4010
    ]:
        async with http.get(base_url + path, headers=headers) as r:
            assert r.status == 401
            jsonschema.validate(await r.json(), error)


def _fuzz(doc: dict[str, Any], base_url: str, headers: dict[str, str], admin: bool) -> list[str]:
    """Every (non-)administrative operation of the document, MAX_EXAMPLES cases each, in both
    generation modes; the failures, described."""
    schema = schemathesis.openapi.from_dict(doc)
    failures: list[str] = []
    tried = 0
    for result in schema.get_all_operations():
        op = result.ok()
        key = (op.method.upper(), op.path)
        if key in NOT_FUZZED or (op.path.startswith("/v1/account") != admin):
            continue
        tried += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.given(case=op.as_strategy(generation_mode=mode))
            @hypothesis.settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                pass  # nothing to make invalid: no parameters, no body (negative mode)
            except Exception as exc:  # hypothesis re-raises the check's failure for one case
                failures.append(f"{key[0]} {key[1]} ({mode.value}): {exc}"[:3000])
    assert tried > (5 if admin else 10), "the document's operations were not found"
    return failures


@pytest.mark.slow  # a fuzzing run of every operation: tens of seconds
async def test_schemathesis_finds_nothing_with_an_api_key(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    doc = await fetch_document(http, base_url)
    failures = await asyncio.to_thread(_fuzz, doc, base_url, {"X-API-Key": account.key}, False)
    assert failures == [], "\n\n".join(failures)


@pytest.mark.slow  # a fuzzing run of every operation: tens of seconds
async def test_schemathesis_finds_nothing_with_the_master_token(
    http: aiohttp.ClientSession, base_url: str, rt: Runtime, make_account: Any
) -> None:
    acct = await make_account("openapi-admin")  # its own account: the run revokes and rotates keys
    master = await issue_master_token(rt.pool, acct.account_id)
    doc = await fetch_document(http, base_url)
    failures = await asyncio.to_thread(_fuzz, doc, base_url, {"Authorization": f"Bearer {master}"}, True)
    assert failures == [], "\n\n".join(failures)


# --- what schemathesis found (the 500s it turned up, fixed, kept as plain tests) -------------


async def test_non_numbers_in_admin_queries_are_400(
    http: aiohttp.ClientSession, base_url: str, rt: Runtime, make_account: Any
) -> None:
    acct = await make_account("openapi-days")
    bearer = {"Authorization": f"Bearer {await issue_master_token(rt.pool, acct.account_id)}"}
    for path, field in [("/v1/account/statistics?days=abc", "days"), ("/v1/account/requests?first=x", None)]:
        async with http.get(base_url + path, headers=bearer) as r:
            body = await r.json()
        assert r.status == 400 and body.get("field") == field, body


async def test_key_fields_of_the_wrong_json_type_are_400(
    http: aiohttp.ClientSession, base_url: str, rt: Runtime, make_account: Any
) -> None:
    acct = await make_account("openapi-types")
    bearer = {"Authorization": f"Bearer {await issue_master_token(rt.pool, acct.account_id)}"}
    for body, field in [
        ({"name": "k", "allowed_ips": [1.5]}, "allowed_ips"),
        ({"name": "k", "allowed_domains": "example.com"}, "allowed_domains"),
        ({"name": "k", "conversion_limit": "10"}, "conversion_limit"),
        ({"name": "k", "restriction_type": ["ip"]}, "restriction_type"),
    ]:
        async with http.post(f"{base_url}/v1/account/keys", json=body, headers=bearer) as r:
            answer = await r.json()
        assert r.status == 400 and answer["field"] == field, (body, answer)


async def test_convert_json_fields_of_the_wrong_type_are_400(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    base = {"filetype": "image", "output_format": "webp", "file_path": "abc/x.png"}
    for name, value in [("output_format", 1.5), ("filetype", ["image"]), ("input_format", 3)]:
        body = {**base, name: value}
        async with http.post(f"{base_url}/v1/convert", json=body, headers={"X-API-Key": account.key}) as r:
            answer = await r.json()
        assert r.status == 400 and answer["field"] == name, (body, answer)

"""Missing or wrong credentials on every transport, and one account never sees another's jobs."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.conftest import Account, GraphQL, operation, wait_for_status
from tests.helpers import queue_tiny_job
from tests.wsclient import connect, subscribe


async def test_graphql_http_without_or_with_a_wrong_key_is_unauthenticated(gql: GraphQL) -> None:
    for key in (None, "sk_live_wrong"):
        body = await gql(operation("Me"), key=key)
        err = body["errors"][0]
        assert err["extensions"]["code"] == "UNAUTHENTICATED"
        assert err["extensions"]["status"] == 401 and err["extensions"]["hint"]
        assert body["data"] is None


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_websocket_refuses_a_wrong_key_at_connection_init(
    http: aiohttp.ClientSession, base_url: str, protocol: str
) -> None:
    _sub, reply = await connect(http, base_url, protocol=protocol, payload={"apiKey": "sk_live_x"})
    if protocol == "graphql-transport-ws":
        assert reply["type"] == "closed" and reply["code"] == 4403
        # the protocol has no error message here: the close reason says what was wrong
        assert (
            reply["reason"]
            == "Forbidden: The API key is not valid. Check that the key is complete and has not been revoked."
        )
    else:
        assert reply["type"] == "connection_error"
        assert reply["payload"]["code"] == "UNAUTHENTICATED"


async def test_websocket_accepts_the_key_from_upgrade_headers(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    _, ack = await connect(http, base_url, headers={"X-API-Key": account.key})
    assert ack["type"] == "connection_ack"


async def _hash_job(http: aiohttp.ClientSession, base_url: str, key: str) -> str:
    return await queue_tiny_job(http, base_url, key, b"secret data")


async def test_tenant_isolation_on_every_transport(
    gql: GraphQL, http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    alice: Account = await make_account("alice")
    mallory: Account = await make_account("mallory")
    job_id = await _hash_job(http, base_url, alice.key)
    await wait_for_status(http, base_url, alice.key, job_id)
    other = {"X-API-Key": mallory.key}

    for path in (f"/v1/status/{job_id}", f"/v1/download/{job_id}"):
        async with http.get(base_url + path, headers=other) as resp:
            assert resp.status == 404, path
    body = await gql(operation("Job"), {"id": job_id}, key=mallory.key)
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    jobs = (await gql(operation("Jobs"), {"first": 100}, key=mallory.key))["data"]["jobs"]
    assert job_id not in [n["id"] for n in jobs["nodes"]]

    sub, _ = await connect(http, base_url, payload={"apiKey": mallory.key})
    await subscribe(sub, operation("JobUpdates"), {"jobId": job_id})
    msg = await sub.next_message()
    assert msg["type"] == "next" and msg["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"

    # an uploaded file of alice's cannot be converted by mallory either
    form = aiohttp.FormData()
    form.add_field("file", b"alice only", filename="a.txt")
    async with http.post(f"{base_url}/v1/upload", data=form, headers={"X-API-Key": alice.key}) as r:
        file_path = (await r.json())["files"][0]["file_path"]
    body = await gql(
        operation("Convert"),
        {"input": {"filePath": file_path, "filetype": "hash", "outputFormat": "txt"}},
        key=mallory.key,
    )
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_multipart_upload_from_a_refused_caller_is_not_stored(gql: GraphQL, settings: Any) -> None:
    incoming = settings.storage_dir / "incoming"
    before = set(incoming.iterdir())
    status, body = await gql.multipart(
        operation("Upload"),
        {"files": [None]},
        {"variables.files.0": ("a.txt", b"x" * 1000)},
        key="sk_live_wrong",
    )
    assert status == 401
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert set(incoming.iterdir()) == before


async def test_oversized_graphql_upload_is_413_in_graphql_shape(
    gql: GraphQL, account: Account, settings: Any
) -> None:
    status, body = await gql.multipart(
        operation("Upload"),
        {"files": [None]},
        {"variables.files.0": ("big.bin", b"\0" * (settings.max_upload_bytes + 1))},
        key=account.key,
    )
    assert status == 413
    assert body["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"

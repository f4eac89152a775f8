"""Webhooks: a job's end is POSTed to the URL it names, signed, retried until delivered."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid

import aiohttp
import pytest

from app.api.server import build_app
from app.runtime import Runtime
from app.services import outbound, webhooks
from tests.conftest import Account, GraphQL, operation, png_bytes, wait_for_status
from tests.helpers import Receiver, queue_tiny_job, signed_by, start_local, wait_until


async def test_finished_job_is_posted_signed_with_the_keys_webhook_secret(
    http: aiohttp.ClientSession, base_url: str, account: Account, receiver: Receiver
) -> None:
    job_id = await queue_tiny_job(
        http, base_url, account.key, b"hello", output_format="json", webhook_url=receiver.url
    )
    await receiver.until_called(1)
    headers, body = receiver.calls[0]
    assert signed_by(account.webhook_secret, headers, body)
    assert not signed_by(account.webhook_secret + "x", headers, body)
    # its own secret: a receiver that verifies webhooks holds nothing that signs a JWT
    assert account.webhook_secret != account.signing_secret
    assert not signed_by(account.signing_secret, headers, body)
    event = json.loads(body)
    assert event["event"] == "job.finished" and event["job_id"] == job_id
    async with http.get(event["download_url"]) as resp:  # signed: works without a key
        assert hashlib.sha256(b"hello").hexdigest() in await resp.text()

    async def delivered() -> bool:
        status = await wait_for_status(http, base_url, account.key, job_id)
        return status["webhook_status"] == "delivered"

    await wait_until(delivered, 5, "the webhook's delivery recorded on the job")


async def test_failed_job_is_posted_and_a_refusing_receiver_is_retried(
    gql: GraphQL, account: Account, receiver: Receiver
) -> None:
    receiver.fail_first = 1
    code, body = await gql.multipart(
        operation("Convert"),
        {"input": {"file": None, "filetype": "image", "outputFormat": "webp", "webhookUrl": receiver.url}},
        {"variables.input.file": ("bad.png", png_bytes()[:60] + b"\0" * 200)},
        key=account.key,
    )
    assert code == 200, body
    await receiver.until_called(2)
    first, second = (json.loads(b) for _, b in receiver.calls[:2])
    assert first == second and second["event"] == "job.failed" and second["error"]


async def test_unusable_webhook_url_is_refused_before_the_job(gql: GraphQL, account: Account) -> None:
    for url in ("ftp://example.com/x", "not a url", "http://"):
        _code, body = await gql.multipart(
            operation("Convert"),
            {"input": {"file": None, "filetype": "hash", "outputFormat": "txt", "webhookUrl": url}},
            {"variables.input.file": ("a.txt", b"x")},
            key=account.key,
        )
        assert body["errors"][0]["extensions"]["code"] == "BAD_REQUEST", url


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "169.254.169.254", "10.1.2.3", "192.168.0.9", "100.64.0.1", "0.0.0.0", "::1",
     "::ffff:127.0.0.1", "fd00::1", "fe80::1", "224.0.0.1", "localhost"],
)  # fmt: skip
async def test_only_public_addresses_by_default(host: str) -> None:
    with pytest.raises(outbound.Refused):
        await outbound.resolve(host, 80, allow_private=False)
    assert await outbound.resolve(host, 80, allow_private=True)


async def test_public_addresses_pass_and_the_connection_uses_only_them() -> None:
    results = await outbound.resolve("93.184.215.14", 443, allow_private=False)
    assert [r["host"] for r in results] == ["93.184.215.14"]
    http = await outbound.session("localhost", 80, allow_private=True, timeout=1)
    async with http:
        resolver = http.connector._resolver  # type: ignore[union-attr]
        # whatever name is asked later, only the addresses checked now come back
        answered = {r["host"] for r in await resolver.resolve("localhost", 80)}
        assert answered <= {"127.0.0.1", "::1"}
        assert {r["host"] for r in await resolver.resolve("rebound.example", 80)} == answered


async def test_webhooks_to_private_addresses_are_refused_by_default(
    rt: Runtime, http: aiohttp.ClientSession, base_url: str, account: Account, receiver: Receiver
) -> None:
    job_id = await queue_tiny_job(http, base_url, account.key, b"x")
    await wait_for_status(http, base_url, account.key, job_id)
    for url in (receiver.url, "http://169.254.169.254/latest/meta-data/", "http://[::1]:6379/"):
        await rt.pool.execute("UPDATE jobs SET webhook_url = $2 WHERE id = $1::uuid", job_id, url)
        default = dataclasses.replace(rt, settings=dataclasses.replace(rt.settings, allow_private_urls=False))
        outcome = await webhooks.deliver(default, uuid.UUID(job_id), last_attempt=True)
        # no port or path scanning: every private target gets the same answer, nothing is sent
        assert outcome.startswith("refused:") and "non-public" in outcome, outcome
    assert receiver.calls == []


PLAINLY_PRIVATE = (
    "http://127.0.0.1:8080/hook",
    "http://LOCALHOST/hook",
    "http://[::1]:6379/",
    "http://169.254.169.254/latest/meta-data/",
    "https://10.0.0.5/x",
    "http://[::ffff:7f00:1]/",
)


async def test_a_webhook_to_a_plainly_private_host_is_refused_with_the_request(
    rt: Runtime, http: aiohttp.ClientSession, account: Account
) -> None:
    # as deployed (private addresses not allowed): an IP literal or localhost is known at once
    default = dataclasses.replace(rt, settings=dataclasses.replace(rt.settings, allow_private_urls=False))
    runner, base = await start_local(build_app(default))
    try:
        for hook in PLAINLY_PRIVATE:
            form = aiohttp.FormData()
            form.add_field("file", b"abc", filename="a.txt")
            form.add_field("filetype", "hash")
            form.add_field("output_format", "txt")
            form.add_field("webhook_url", hook)
            async with http.post(f"{base}/v1/convert", data=form, headers={"X-API-Key": account.key}) as r:
                body = await r.json()
            assert r.status == 400, (hook, body)
            assert body["field"] == "webhook_url" and "CONVERTD_ALLOW_PRIVATE_URLS" in body["hint"], body
        # a name is resolved (and checked) when it is called: accepted now
        job_id = await queue_tiny_job(
            http, base, account.key, webhook_url="https://hooks.example.com/convertd"
        )
        await wait_for_status(http, base, account.key, job_id)
    finally:
        await runner.cleanup()

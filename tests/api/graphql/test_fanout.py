"""jobUpdates over websockets with many subscribers: each version rendered once per document,
variables and audience (app/api/graphql/jobs/fanout.py), and still every version to every
subscriber, in order, with the payload its own document asks for, and nothing to a caller
who may not see the job."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from typing import Any

import aiohttp

from app.models import JobStatus
from app.runtime import Runtime
from app.services import job_changes
from tests.api.graphql.test_ws_many import _frame
from tests.conftest import Account
from tests.wsclient import Subscription, connect, subscribe

FULL = """subscription Follow($id: ID!) {
  jobUpdates(jobId: $id) {
    id status progress error outputName outputSize statusUrl downloadUrl updatedAt
  }
}"""
PROTOCOLS = ("graphql-transport-ws", "graphql-ws")


async def _unqueued_job(rt: Runtime, account: Account) -> Any:
    # a job row no worker takes: the test alone changes it
    return await rt.pool.fetchval(
        "INSERT INTO jobs (account_id, filetype, input_format, output_format, input_uploads)"
        " VALUES ((SELECT account_id FROM api_keys WHERE id = $1), 'image', 'png', 'jpg', '{}')"
        " RETURNING id",
        account.key_id,
    )


async def _subscriber(
    http: aiohttp.ClientSession,
    base_url: str,
    key: str,
    document: str,
    variables: dict[str, Any],
    *,
    protocol: str = "graphql-transport-ws",
    headers: dict[str, str] | None = None,
) -> tuple[Subscription, dict[str, Any]]:
    """Subscribed, with its first message (the job as it stood) read."""
    sub, ack = await connect(http, base_url, protocol=protocol, payload={"apiKey": key}, headers=headers)
    assert ack["type"] == "connection_ack", ack
    await subscribe(sub, document, variables)
    return sub, await sub.next_message()


async def _finish(rt: Runtime, job_id: Any) -> None:
    await job_changes.save_change(rt, job_id, status=JobStatus.FINISHED, progress=1.0, output_name="out.jpg",
                           output_size=3, output_path="nowhere")  # fmt: skip


async def test_fifty_subscribers_get_every_version_with_identical_payloads(
    rt: Runtime, http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    job_id = await _unqueued_job(rt, account)
    variables = {"id": str(job_id)}

    def open_many(n: int) -> Any:
        return asyncio.gather(*(
            _subscriber(http, base_url, account.key, FULL, variables, protocol=PROTOCOLS[i % 2])
            for i in range(n)
        ))  # fmt: skip

    early = await open_many(25)
    # the rest subscribe while the job changes: their first version is wherever they came in
    late_task = asyncio.ensure_future(open_many(25))
    for i in range(1, 21):
        await job_changes.save_change(
            rt, job_id, status=JobStatus.PROCESSING, progress=i / 32
        )  # exact in a float4
        await asyncio.sleep(0)
    late = await late_task
    # the end is written once all have their first version (a download URL rendered in
    # another second would differ in its expiry)
    await _finish(rt, job_id)

    written = [0.0] + [i / 32 for i in range(1, 21)] + [1.0]
    statuses = ["PENDING"] + ["PROCESSING"] * 20 + ["FINISHED"]
    by_step: dict[int, list[dict[str, Any]]] = {}
    for n, (sub, first) in enumerate([*early, *late]):
        assert first["type"] in ("next", "data"), first
        payloads = [first["payload"], *await sub.results()]
        await sub.ws.close()
        seen = [(p["data"]["jobUpdates"]["status"], p["data"]["jobUpdates"]["progress"]) for p in payloads]
        start = len(written) - len(seen)
        # no version missing, none twice, in order, up to the end
        assert seen == list(zip(statuses, written, strict=True))[start:], (n, seen)
        if n < 25:
            assert start == 0, seen
        for offset, payload in enumerate(payloads):
            by_step.setdefault(start + offset, []).append(payload)

    assert len(by_step[len(written) - 1]) == 50
    for step, payloads in by_step.items():
        # the first version each one saw was rendered for it alone, the rest once for all:
        # the same payload either way
        assert all(p == payloads[0] for p in payloads), (step, payloads)
    final = by_step[len(written) - 1][0]["data"]["jobUpdates"]
    assert final["id"] == str(job_id) and final["outputName"] == "out.jpg"
    assert final["statusUrl"] == f"{base_url}/v1/status/{job_id}"
    assert final["downloadUrl"].startswith(f"{base_url}/v1/download/{job_id}?expires=")


async def test_each_document_variables_and_host_get_their_own_payloads(
    rt: Runtime, http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    job_id = await _unqueued_job(rt, account)
    short = "subscription($id: ID!) { jobUpdates(jobId: $id) { status progress } }"
    urls = """subscription($id: ID!, $urls: Boolean!) {
      job: jobUpdates(jobId: $id) { progress outputName statusUrl @include(if: $urls) } }"""
    port = base_url.rsplit(":", 1)[1]
    other_host = f"localhost:{port}"
    groups = {
        "short": (short, {"id": str(job_id)}, None),
        "urls": (urls, {"id": str(job_id), "urls": True}, None),
        "no-urls": (urls, {"urls": False, "id": str(job_id)}, None),
        "other-host": (urls, {"id": str(job_id), "urls": True}, {"Host": other_host}),
    }
    subs = {
        name: await asyncio.gather(
            *(
                _subscriber(http, base_url, account.key, doc, variables, protocol=protocol, headers=headers)
                for protocol in PROTOCOLS
                for _ in range(2)
            )
        )
        for name, (doc, variables, headers) in groups.items()
    }
    for i in (1, 2):
        await job_changes.save_change(rt, job_id, status=JobStatus.PROCESSING, progress=i / 2)
    await _finish(rt, job_id)

    status_url = f"/v1/status/{job_id}"
    expected = {
        "short": [{"jobUpdates": {"status": s, "progress": p}}
                  for s, p in [("PENDING", 0), ("PROCESSING", 0.5), ("PROCESSING", 1), ("FINISHED", 1)]],
        "urls": [{"job": {"progress": p, "outputName": n, "statusUrl": f"{base_url}{status_url}"}}
                 for p, n in [(0, None), (0.5, None), (1, None), (1, "out.jpg")]],
        "no-urls": [{"job": {"progress": p, "outputName": n}}
                    for p, n in [(0, None), (0.5, None), (1, None), (1, "out.jpg")]],
        "other-host": [{"job": {"progress": p, "outputName": n, "statusUrl": f"http://{other_host}{status_url}"}}
                       for p, n in [(0, None), (0.5, None), (1, None), (1, "out.jpg")]],
    }  # fmt: skip
    for name, members in subs.items():
        for sub, first in members:
            got = [first["payload"]["data"]] + [p["data"] for p in await sub.results()]
            await sub.ws.close()
            assert got == expected[name], (name, sub.protocol, got)


async def test_a_caller_who_may_not_see_the_job_gets_nothing(
    rt: Runtime, http: aiohttp.ClientSession, base_url: str, account: Account, make_account: Any
) -> None:
    job_id = await _unqueued_job(rt, account)
    stranger = await make_account("stranger")
    variables = {"id": str(job_id)}
    owner, first = await _subscriber(http, base_url, account.key, FULL, variables)
    assert first["payload"]["data"]["jobUpdates"]["status"] == "PENDING"

    # the same document and variables as the owner's, while the owner follows the job
    for protocol in PROTOCOLS:
        intruder, refused = await _subscriber(
            http, base_url, stranger.key, FULL, variables, protocol=protocol
        )
        if refused["type"] in ("next", "data"):  # an error in the result, then complete
            assert refused["payload"]["data"] is None
            errors = refused["payload"]["errors"]
            assert (await intruder.next_message())["type"] == "complete"
        else:
            assert refused["type"] == "error", refused
            errors = refused["payload"] if isinstance(refused["payload"], list) else [refused["payload"]]
        assert errors[0]["extensions"]["code"] == "NOT_FOUND", errors

        await job_changes.save_change(rt, job_id, status=JobStatus.PROCESSING, progress=0.5)
        # something the intruder's connection answers, so what it got in between shows
        if protocol == "graphql-transport-ws":
            await intruder.ws.send_json({"type": "ping"})
            assert (await intruder.ws.receive_json(timeout=30))["type"] == "pong"
        else:
            await subscribe(intruder, "subscription { nothing }", {}, op_id="marker")
            marker = await intruder.next_message()
            assert marker["type"] == "error" and marker["id"] == "marker", marker
        await intruder.ws.close()

    await _finish(rt, job_id)
    got = [p["data"]["jobUpdates"]["progress"] for p in await owner.results()]
    assert got == [0.5, 0.5, 1.0]  # the owner saw both changes (same progress, two versions)
    await owner.ws.close()


async def test_a_subscriber_that_does_not_read_holds_up_no_one(
    rt: Runtime, http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    job_id = await _unqueued_job(rt, account)
    # big payloads after the first, so the sleeper's socket and the server's send buffer fill up
    items = [f"{i:04d}-" + "x" * 200 for i in range(2000)]
    big = "subscription($id: ID!) { jobUpdates(jobId: $id) { progress a: outputItems b: outputItems } }"
    variables = {"id": str(job_id)}

    loop = asyncio.get_running_loop()
    host = base_url.removeprefix("http://")  # as the other's, so both follow the same feed
    sleeper = socket.socket()
    sleeper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: no autotuning
    sleeper.setblocking(False)
    await loop.sock_connect(sleeper, ("127.0.0.1", int(host.rsplit(":", 1)[1])))
    await loop.sock_sendall(sleeper, (
        f"GET /graphql HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
    ).encode() + _frame({"type": "connection_init", "payload": {"apiKey": account.key}}) + _frame(
        {"id": "1", "type": "subscribe", "payload": {"query": big, "variables": variables}}
    ))  # fmt: skip
    data = bytearray()
    while b"\r\n\r\n" not in data:
        data += await asyncio.wait_for(loop.sock_recv(sleeper, 1 << 16), 60)
    buf = data[data.index(b"\r\n\r\n") + 4 :]
    messages: list[dict[str, Any]] = []

    async def read_until(kind: str) -> None:
        """The sleeper's messages, through the first of this type."""
        while True:
            while len(buf) >= 2:
                n, at = buf[1] & 0x7F, 2
                if n == 126:
                    n, at = int.from_bytes(buf[2:4], "big"), 4
                elif n == 127:
                    n, at = int.from_bytes(buf[2:10], "big"), 10
                if len(buf) < at + n:
                    break
                if buf[0] & 0x0F == 0x1:  # text; the server's pings are skipped
                    messages.append(json.loads(bytes(buf[at : at + n])))
                del buf[: at + n]
                if messages and messages[-1]["type"] == kind:
                    return
            data = await asyncio.wait_for(loop.sock_recv(sleeper, 1 << 20), 60)
            assert data, f"the server closed the connection after {messages[-1:]}"
            buf.extend(data)

    await read_until("next")  # the job as it stood (small); from here on it reads nothing
    awake, first = await _subscriber(http, base_url, account.key, big, variables)
    written = [0.0] + [i / 32 for i in range(1, 25)] + [1.0]
    for progress in written[1:-1]:
        await job_changes.save_change(
            rt, job_id, status=JobStatus.PROCESSING, progress=progress, output_items=items
        )
    await _finish(rt, job_id)
    # the reader gets every version while the sleeper reads nothing
    rest = await asyncio.wait_for(awake.results(), 120)  # (pings keep each receive alive)
    got = [first["payload"]["data"]["jobUpdates"]] + [p["data"]["jobUpdates"] for p in rest]
    assert [u["progress"] for u in got] == written
    assert got[0]["a"] == [] and all(u["a"] == items for u in got[1:])
    await awake.ws.close()

    # then the sleeper reads: every version, in order, then complete
    await read_until("complete")
    sleeper.close()
    assert messages[0]["type"] == "connection_ack"
    updates = [m["payload"]["data"]["jobUpdates"] for m in messages[1:-1]]
    assert [u["progress"] for u in updates] == written
    assert all(u["b"] == items for u in updates[1:])


async def test_a_stopped_subscription_gets_nothing_more_and_the_others_go_on(
    rt: Runtime, http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    job_id = await _unqueued_job(rt, account)
    variables = {"id": str(job_id)}
    stays, _ = await _subscriber(http, base_url, account.key, FULL, variables)
    stops = [
        (await _subscriber(http, base_url, account.key, FULL, variables, protocol=protocol))[0]
        for protocol in PROTOCOLS
    ]
    await job_changes.save_change(rt, job_id, status=JobStatus.PROCESSING, progress=0.25)
    assert (await stays.next_message())["payload"]["data"]["jobUpdates"]["progress"] == 0.25
    for sub in stops:
        assert (await sub.next_message())["payload"]["data"]["jobUpdates"]["progress"] == 0.25
        stop = "complete" if sub.protocol == "graphql-transport-ws" else "stop"
        await sub.ws.send_json({"id": "1", "type": stop})
        if sub.protocol == "graphql-ws":
            assert (await sub.next_message()) == {"type": "complete", "id": "1"}
    await job_changes.save_change(rt, job_id, progress=0.5)
    # the feed writes to all its followers in one pass: once this one has it, the stopped
    # ones would have had it too
    assert (await stays.next_message())["payload"]["data"]["jobUpdates"]["progress"] == 0.5
    for sub in stops:
        if sub.protocol == "graphql-transport-ws":
            await sub.ws.send_json({"type": "ping"})
            assert (await sub.next_message()) == {"type": "pong"}
        else:
            await subscribe(sub, "subscription { nothing }", {}, op_id="marker")
            marker = await sub.next_message()
            assert marker["type"] == "error" and marker["id"] == "marker", marker
        await sub.ws.close()
    await _finish(rt, job_id)
    assert [p["data"]["jobUpdates"]["progress"] for p in await stays.results()] == [1.0]
    await stays.ws.close()

"""Many websocket subscribers at once: each gets its acknowledgement and its job, never a
broken stream."""

from __future__ import annotations

import asyncio
import base64
import json
import os

import aiohttp
import pytest

from tests.conftest import Account
from tests.helpers import queue_tiny_job

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # 150 websocket subscribers at once

QUERY = "subscription($id: ID!) { jobUpdates(jobId: $id) { status } }"


def _frame(obj: object) -> bytes:
    data = json.dumps(obj).encode()
    mask = os.urandom(4)
    size = (
        bytes([0x80 | len(data)]) if len(data) < 126 else bytes([0x80 | 126]) + len(data).to_bytes(2, "big")
    )
    return b"\x81" + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


async def _subscriber(port: int, key: str, job_id: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key_header = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key_header}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n".encode()
    )
    writer.write(_frame({"type": "connection_init", "payload": {"apiKey": key}}))
    writer.write(
        _frame({"id": "1", "type": "subscribe", "payload": {"query": QUERY, "variables": {"id": job_id}}})
    )
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    data = b""
    while data.count(b"\x81") < 2 and len(data) < 2000:
        chunk = await asyncio.wait_for(reader.read(2000), 30)
        if not chunk:
            break
        data += chunk
    writer.close()
    return data


async def test_150_subscribers_at_once_each_get_a_well_formed_stream(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    job_id = await queue_tiny_job(http, base_url, account.key)
    port = int(base_url.rsplit(":", 1)[1])
    streams = await asyncio.gather(*(_subscriber(port, account.key, job_id) for _ in range(150)))
    broken = [s[:120] for s in streams if not s.startswith(b"\x81") or b"connection_ack" not in s]
    assert not broken, f"{len(broken)} broken streams, e.g. {broken[0]!r}"

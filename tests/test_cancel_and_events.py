"""Cancelling jobs, and following a job over server-sent events (REST's live stream)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from tests.conftest import Account, GraphQL, operation, wait_for_status
from tests.test_media_progress import make_video


async def _start(
    gql: GraphQL,
    key: str,
    name: str,
    data: bytes,
    filetype: str,
    out: str,
    options: dict[str, Any] | None = None,
) -> str:
    status, body = await gql.multipart(
        operation("Convert"),
        {"input": {"file": None, "filetype": filetype, "outputFormat": out, "options": options}},
        {"variables.input.file": (name, data)},
        key=key,
    )
    assert status == 200, body
    return body["data"]["convert"]["id"]


def _converter_children(job_id: str) -> list[psutil.Process]:
    """The processes converting this job: they work inside its directory (idle warm children don't)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if job_id in proc.cwd():
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


async def test_cancelling_a_running_job_stops_it_and_refunds_it(
    gql: GraphQL, http: aiohttp.ClientSession, base_url: str, account: Account, tmp_path: Path
) -> None:
    clip = tmp_path / "long.mp4"
    make_video(clip, seconds=30)
    job_id = await _start(
        gql, account.key, "long.mp4", clip.read_bytes(), "video", "webm", {"codec": "vp9", "preset": "slow"}
    )
    for _ in range(300):
        async with http.get(f"{base_url}/v1/status/{job_id}", headers={"X-API-Key": account.key}) as r:
            if (await r.json())["status"] == "processing":
                break
        await asyncio.sleep(0.1)
    for _ in range(100):  # the child starts just after the job turns processing
        running = {p.pid for p in _converter_children(job_id)}
        if running:
            break
        await asyncio.sleep(0.05)
    assert running, "the conversion should be running in a child process"

    body = await gql(operation("CancelJob"), {"id": job_id}, key=account.key)
    cancelled = body["data"]["cancelJob"]
    assert cancelled["status"] == "FAILED" and "Cancelled" in cancelled["error"]
    for _ in range(100):  # the worker notices within its abort timer (1 s)
        if not running & {p.pid for p in _converter_children(job_id)}:
            break
        await asyncio.sleep(0.1)
    assert not running & {p.pid for p in _converter_children(job_id)}, "the converter kept running"
    final = await wait_for_status(http, base_url, account.key, job_id)
    assert final["status"] == "failed" and "Cancelled" in final["error"]

    again = await gql(operation("CancelJob"), {"id": job_id}, key=account.key)
    assert again["errors"][0]["extensions"]["code"] == "NOT_READY"
    # the worker goes on with other jobs
    next_id = await _start(gql, account.key, "a.txt", b"abc", "hash", "txt")
    assert (await wait_for_status(http, base_url, account.key, next_id))["status"] == "finished"


async def test_another_account_cannot_cancel(
    gql: GraphQL, http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    owner, other = await make_account("owner"), await make_account("other")
    job_id = await _start(gql, owner.key, "a.txt", b"abc", "hash", "txt")
    async with http.post(f"{base_url}/v1/cancel/{job_id}", headers={"X-API-Key": other.key}) as r:
        assert r.status == 404


async def test_server_sent_events_follow_a_job_to_its_end(
    gql: GraphQL, http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    job_id = await _start(gql, account.key, "a.txt", b"abc" * 1000, "hash", "json")
    events = []
    async with http.get(f"{base_url}/v1/events/{job_id}", headers={"X-API-Key": account.key}) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        async for line in r.content:
            if line.startswith(b"data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["status"] == "finished" and events[-1]["download_url"]
    assert [e["status"] for e in events] == sorted(
        (e["status"] for e in events), key=["pending", "processing", "finished"].index
    )
    async with http.get(
        f"{base_url}/v1/events/00000000-0000-0000-0000-000000000000", headers={"X-API-Key": account.key}
    ) as r:
        assert r.status == 404

"""Cancelling jobs, and following a job over server-sent events (REST's live stream)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from app.services import job_changes
from app.services.accounts import issue_master_token
from tests.conftest import Account, GraphQL, operation, wait_for_status
from tests.helpers import wait_until
from tests.services.test_media_progress import make_video


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
    await wait_until(lambda: _status_is(http, base_url, account.key, job_id, "processing"), 30, "job running")
    # the child starts just after the job turns processing
    running = await wait_until(
        lambda: {p.pid for p in _converter_children(job_id)}, 5, "the conversion running in a child process"
    )

    body = await gql(operation("CancelJob"), {"id": job_id}, key=account.key)
    cancelled = body["data"]["cancelJob"]
    assert cancelled["status"] == "FAILED" and "Cancelled" in cancelled["error"]
    # the worker notices within its abort timer (1 s)
    await wait_until(
        lambda: not running & {p.pid for p in _converter_children(job_id)}, 10, "converter stopped"
    )
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
    # the queue's wait and the conversion's time, told apart
    times = [datetime.fromisoformat(events[-1][f"{t}_at"]) for t in ("created", "started", "finished")]
    assert times == sorted(times), events[-1]
    assert [e["status"] for e in events] == sorted(
        (e["status"] for e in events), key=["pending", "processing", "finished"].index
    )
    async with http.get(
        f"{base_url}/v1/events/00000000-0000-0000-0000-000000000000", headers={"X-API-Key": account.key}
    ) as r:
        assert r.status == 404


async def _conversions_used(http: aiohttp.ClientSession, base_url: str, master: str) -> int:
    async with http.get(f"{base_url}/v1/account", headers={"Authorization": f"Bearer {master}"}) as r:
        assert r.status == 200
        return (await r.json())["account"]["conversions_used"]


async def _running(gql: GraphQL, http: aiohttp.ClientSession, base_url: str, key: str, tmp_path: Path) -> str:
    """A job that converts for many seconds and is processing now."""
    clip = tmp_path / "long.mp4"
    make_video(clip, seconds=30)
    job_id = await _start(
        gql, key, "long.mp4", clip.read_bytes(), "video", "webm", {"codec": "vp9", "preset": "slow"}
    )
    await wait_until(lambda: _status_is(http, base_url, key, job_id, "processing"), 30, "the job started")
    return job_id


async def _status_is(http: aiohttp.ClientSession, base_url: str, key: str, job_id: str, status: str) -> bool:
    async with http.get(f"{base_url}/v1/status/{job_id}", headers={"X-API-Key": key}) as r:
        return bool((await r.json())["status"] == status)


async def test_concurrent_cancels_refund_the_conversion_once(
    gql: GraphQL, http: aiohttp.ClientSession, base_url: str, rt: Any, account: Account, tmp_path: Path
) -> None:
    master = await issue_master_token(rt.pool, account.account_id)
    done = await _start(gql, account.key, "a.txt", b"abc", "hash", "txt")
    assert (await wait_for_status(http, base_url, account.key, done))["status"] == "finished"
    job_id = await _running(gql, http, base_url, account.key, tmp_path)
    assert await _conversions_used(http, base_url, master) == 2

    async def cancel() -> int:
        async with http.post(f"{base_url}/v1/cancel/{job_id}", headers={"X-API-Key": account.key}) as r:
            return r.status

    statuses = await asyncio.gather(*(cancel() for _ in range(6)))
    assert sorted(statuses)[0] == 200 and statuses.count(200) == 1, statuses
    assert set(statuses) == {200, 409}, statuses  # the others find it failed already
    assert await _conversions_used(http, base_url, master) == 1  # the finished job stays charged


async def test_a_cancel_racing_the_finish_either_cancels_and_refunds_or_finds_it_finished(
    gql: GraphQL, http: aiohttp.ClientSession, base_url: str, rt: Any, account: Account
) -> None:
    master = await issue_master_token(rt.pool, account.account_id)
    finished = 0
    for round_ in range(8):
        job_id = await _start(gql, account.key, "a.txt", b"x" * 50_000, "hash", "json")
        await asyncio.sleep(0.01 * round_)  # land the cancel at different moments of the job
        async with http.post(f"{base_url}/v1/cancel/{job_id}", headers={"X-API-Key": account.key}) as r:
            cancelled = r.status == 200
        final = await wait_for_status(http, base_url, account.key, job_id)
        async with http.get(f"{base_url}/v1/download/{job_id}", headers={"X-API-Key": account.key}) as r:
            downloadable = r.status == 200
        if cancelled:
            assert final["status"] == "failed" and not downloadable, final
        else:
            assert final["status"] == "finished" and downloadable, final
            finished += 1
        # only finished work is charged, whoever won the race
        assert await _conversions_used(http, base_url, master) == finished, round_


async def test_failing_an_ended_job_refunds_nothing(
    gql: GraphQL, http: aiohttp.ClientSession, base_url: str, rt: Any, account: Account
) -> None:
    master = await issue_master_token(rt.pool, account.account_id)
    job_id = await _start(gql, account.key, "a.txt", b"abc", "hash", "txt")
    assert (await wait_for_status(http, base_url, account.key, job_id))["status"] == "finished"
    # a late failure (recovery, a worker's error path) of a job that already ended
    job = await job_changes.fail(rt, uuid.UUID(job_id), "late", None)
    assert job.status.value == "finished"
    assert await _conversions_used(http, base_url, master) == 1
    async with http.get(f"{base_url}/v1/download/{job_id}", headers={"X-API-Key": account.key}) as r:
        assert r.status == 200

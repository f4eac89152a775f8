"""jobUpdates' source: the snapshot, then every change, none lost or repeated."""

from __future__ import annotations

import asyncio
from typing import Any

from app.auth.authenticate import authenticate
from app.auth.request import RequestInfo
from app.models import JobStatus
from app.runtime import Runtime
from app.services import job_changes, job_reads, processing
from tests.conftest import Account


async def _unqueued_job(rt: Runtime, account: Account) -> Any:
    # a job row no worker will take: the test alone changes it
    return await rt.pool.fetchval(
        "INSERT INTO jobs (account_id, filetype, input_format, output_format, input_uploads)"
        " VALUES ((SELECT account_id FROM api_keys WHERE id = $1), 'image', 'png', 'jpg', '{}')"
        " RETURNING id",
        account.key_id,
    )


async def test_changes_racing_the_snapshot_are_neither_lost_nor_repeated(
    rt: Runtime, account: Account
) -> None:
    principal = await authenticate(rt, RequestInfo(account.key, "127.0.0.1", {}, "test", False))
    job_id = await _unqueued_job(rt, account)

    async def writer() -> None:
        for i in range(1, 100):
            await job_changes.save_change(rt, job_id, status=JobStatus.PROCESSING, progress=i / 100)
        await job_changes.save_change(rt, job_id, status=JobStatus.FINISHED, progress=1.0)

    seen = []
    # the writer starts at once, so changes land before, during and after the snapshot read
    task = asyncio.create_task(writer())
    async for job in job_reads.watch(rt, principal, str(job_id)):
        seen.append(job.version)
    await task
    assert seen == list(range(seen[0], 101)), seen
    assert len(seen) >= 1


async def test_watch_ends_at_failure(rt: Runtime, account: Account) -> None:
    principal = await authenticate(rt, RequestInfo(account.key, "127.0.0.1", {}, "test", False))
    job_id = await _unqueued_job(rt, account)
    stream = job_reads.watch(rt, principal, str(job_id))
    first = await anext(stream)
    assert first.status is JobStatus.PENDING
    await job_changes.save_change(rt, job_id, status=JobStatus.FAILED, error="bad input")
    last = await anext(stream)
    assert last.status is JobStatus.FAILED and last.error == "bad input"
    assert [j async for j in stream] == []


async def test_an_end_written_by_a_worker_that_died_before_publishing_it_reaches_subscribers(
    rt: Runtime, account: Account
) -> None:
    principal = await authenticate(rt, RequestInfo(account.key, "127.0.0.1", {}, "test", False))
    job_id = await _unqueued_job(rt, account)
    stream = job_reads.watch(rt, principal, str(job_id))
    assert (await anext(stream)).status is JobStatus.PENDING
    # the end as a killed worker leaves it: in PostgreSQL, never published
    await rt.pool.execute(
        "UPDATE jobs SET status = 'finished', progress = 1, version = version + 1 WHERE id = $1", job_id
    )

    async def touch() -> None:
        pass

    # the queue hands the job to the next attempt, which finds it ended
    retaken = await processing.process(rt, job_id, touch)
    last = await asyncio.wait_for(anext(stream), 10)
    assert last.status is JobStatus.FINISHED and last.version == retaken.version
    assert [j async for j in stream] == []

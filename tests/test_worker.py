"""Workers: failures are recorded on the job, and a killed worker's job runs again."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.config import Settings
from app.models import JobStatus
from app.runtime import Runtime
from app.services import jobs
from app.storage import IncomingFile
from tests.conftest import Account, png_bytes, wait_for_status
from tests.helpers import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # worker processes started and killed


async def test_corrupt_image_fails_clearly_and_the_next_job_succeeds(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    corrupt = png_bytes()[:60] + b"\x00garbage" * 20  # a real PNG header, then nonsense
    ids = []
    for data in (corrupt, png_bytes()):
        form = aiohttp.FormData()
        form.add_field("file", data, filename="picture.png")
        form.add_field("filetype", "image")
        form.add_field("output_format", "webp")
        async with http.post(f"{base_url}/v1/convert", data=form, headers={"X-API-Key": account.key}) as resp:
            body = await resp.json()
        assert resp.status == 202, body
        ids.append(body["job_id"])
    failed = await wait_for_status(http, base_url, account.key, ids[0])
    assert failed["status"] == "failed" and failed["ok"] is False
    assert failed["error"] and "Traceback" not in failed["error"]
    ok = await wait_for_status(http, base_url, account.key, ids[1])
    assert ok["status"] == "finished"


def _worker_env(settings: Settings, queue: str) -> dict[str, str]:
    return {
        **os.environ,
        "CONVERTD_DATABASE_URL": settings.database_url or "",
        "CONVERTD_REDIS_URL": settings.redis_url or "",
        "CONVERTD_DATA_DIR": str(settings.data_dir),
        "CONVERTD_SECRET": settings.secret,
        "CONVERTD_QUEUE": queue,
        "CONVERTD_JOB_HEARTBEAT": "2",
        "CONVERTD_SWEEP_INTERVAL": "1",
        "CONVERTD_JOB_RETRY_DELAY": "0",
        "CONVERTD_WORKER_CONCURRENCY": "1",
    }


def _start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        env=env,
        stdout=open("/tmp/worker.log", "ab"),
        stderr=subprocess.STDOUT,
    )


async def test_job_of_a_worker_killed_mid_job_is_taken_up_again(
    settings: Settings, make_account: Any, tmp_path: Path
) -> None:
    # a queue of its own, so only the worker processes started here take the job
    queue = "killtest"
    own = dataclasses.replace(settings, queue=dataclasses.replace(settings.queue, name=queue, heartbeat=4))
    rt = await Runtime.open(own)
    first = second = None
    try:
        acc = await make_account("killed")
        from app.services.keys import create_account_with_key  # noqa: F401 - same account model

        principal = await _principal(rt, acc)
        big = own.storage_dir / "incoming" / "big.bin"
        with open(big, "wb") as fh:  # sparse: hashing 1.5 GB takes seconds, costs no disk
            fh.truncate(1536 * 1024 * 1024)
        incoming = IncomingFile(big, "big.bin", big.stat().st_size, None)
        env = _worker_env(own, queue)
        first = _start_worker(env)
        # the worker has started once it registers with its queue
        await wait_until(lambda: _has_worker(rt), 60, "the worker registered with its queue")
        job = await jobs.convert(
            rt,
            principal,
            filetype="hash",
            output_format="json",
            options={"algorithms": ["sha512"]},
            files=[incoming],
        )
        assert await _until(rt, job.id, lambda j: j["status"] == "processing", 30)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = asyncio.get_running_loop().time()

        second = _start_worker(env)
        assert await _until(rt, job.id, lambda j: j["status"] == "finished", 150), await rt.pool.fetchrow(
            "SELECT status, error, attempts FROM jobs WHERE id = $1", job.id
        )
        taken_up_after = asyncio.get_running_loop().time() - killed_at
        row = await rt.pool.fetchrow("SELECT * FROM jobs WHERE id = $1", job.id)
        assert row["attempts"] == 2 and JobStatus(row["status"]) is JobStatus.FINISHED
        assert taken_up_after < 60
    finally:
        for proc in (first, second):
            if proc and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    raise
        await rt.close()


async def _principal(rt: Runtime, acc: Account) -> Any:
    from app.auth.authenticate import authenticate
    from app.auth.request import RequestInfo

    return await authenticate(rt, RequestInfo(acc.key, "127.0.0.1", {}, "test", False))


async def _has_worker(rt: Runtime) -> bool:
    return bool((await rt.queue.info())["workers"])


async def _until(rt: Runtime, job_id: Any, predicate: Any, timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        row = await rt.pool.fetchrow("SELECT status FROM jobs WHERE id = $1", job_id)
        if predicate(row):
            return True
        await asyncio.sleep(0.1)
    return False


async def test_reconcile_requeues_jobs_lost_by_redis_and_fails_abandoned_ones(
    rt: Runtime, account: Account, http: aiohttp.ClientSession, base_url: str
) -> None:
    from app.services import recovery

    owner = await rt.pool.fetchval("SELECT account_id FROM api_keys WHERE id = $1", account.key_id)
    upload = await rt.pool.fetchval(
        "INSERT INTO uploads (account_id, token, file_name, file_size, storage_path)"
        " VALUES ($1, 'lost0', 'a.txt', 0, 'uploads/none') RETURNING id",
        owner,
    )
    (rt.storage.path("uploads/none")).write_bytes(b"lost")
    old = "now() - interval '5 minutes'"
    queue = rt.settings.queue.name
    lost, elsewhere = [
        await rt.pool.fetchval(
            "INSERT INTO jobs (account_id, filetype, input_format, output_format, input_uploads,"
            f" updated_at, queue) VALUES ($1, 'hash', 'txt', 'txt', ARRAY[$2::bigint], {old}, $3)"
            " RETURNING id",
            owner,
            upload,
            name,
        )
        for name in (queue, "another-deployment")
    ]
    abandoned = await rt.pool.fetchval(
        "INSERT INTO jobs (account_id, filetype, input_format, output_format, input_uploads,"
        f" status, attempts, updated_at, queue) VALUES ($1, 'hash', 'txt', 'txt', ARRAY[$2::bigint],"
        f" 'processing', 3, {old}, $3) RETURNING id",
        owner,
        upload,
        queue,
    )
    touched = await recovery.reconcile(rt)
    assert set(touched) >= {lost, abandoned}
    # a job sent to another deployment's queue (one database, two queues) is that one's to
    # recover: its files may be in a store this one cannot read
    assert elsewhere not in touched
    assert await rt.pool.fetchval("SELECT status FROM jobs WHERE id = $1", elsewhere) == "pending"
    done = await wait_for_status(http, base_url, account.key, str(lost))
    assert done["status"] == "finished"
    failed = await wait_for_status(http, base_url, account.key, str(abandoned))
    assert failed["status"] == "failed" and "worker" in failed["error"]


async def test_a_failed_conversion_is_not_charged(
    http: aiohttp.ClientSession, base_url: str, make_account: Any, make_plan: Any
) -> None:
    acc = await make_account("one-shot", plan=await make_plan(conversions=1))
    corrupt = png_bytes()[:60] + b"\x00garbage" * 20

    async def convert(data: bytes) -> tuple[int, dict[str, Any]]:
        form = aiohttp.FormData()
        form.add_field("file", data, filename="picture.png")
        form.add_field("filetype", "image")
        form.add_field("output_format", "webp")
        async with http.post(f"{base_url}/v1/convert", data=form, headers={"X-API-Key": acc.key}) as r:
            return r.status, await r.json()

    status, body = await convert(corrupt)
    assert status == 202
    assert (await wait_for_status(http, base_url, acc.key, body["job_id"]))["status"] == "failed"
    status, body = await convert(png_bytes())  # the failed one was given back
    assert status == 202, body
    assert (await wait_for_status(http, base_url, acc.key, body["job_id"]))["status"] == "finished"
    status, body = await convert(png_bytes())  # the allowance is spent now
    assert status == 403 and "No conversions remaining" in body["message"]

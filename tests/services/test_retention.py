"""Bounded storage (issue 8, item 12): retention per plan and its sweeper, deleting a job,
storage use per account and the plan's storage quota, the request log kept so many days."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from saq.job import Status

from app import cli
from app.config import Settings
from app.runtime import Runtime
from app.services import retention
from tests.conftest import Account, GraphQL, operation, wait_for_status

JOB = "query J($id: ID!) { job(id: $id) { id status expiredAt downloadUrl } }"


def form(data: bytes, filename: str, **fields: str) -> aiohttp.FormData:
    out = aiohttp.FormData()
    out.add_field("file", data, filename=filename)
    for name, v in fields.items():
        out.add_field(name, v)
    return out


async def convert_hash(http: aiohttp.ClientSession, base_url: str, acct: Account, data: bytes = b"abc",
                       file_path: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A finished hash job (fast, any bytes) and its final status."""
    headers = {"X-API-Key": acct.key}
    if file_path:
        body = {"file_path": file_path, "filetype": "hash", "output_format": "txt"}
        resp = http.post(f"{base_url}/v1/convert", headers=headers, json=body)
    else:
        resp = http.post(f"{base_url}/v1/convert", headers=headers,
                         data=form(data, "in.txt", filetype="hash", output_format="txt"))  # fmt: skip
    async with resp as r:
        assert r.status == 202, await r.text()
        job_id = (await r.json())["job_id"]
    status = await wait_for_status(http, base_url, acct.key, job_id)
    assert status["status"] == "finished", status
    return status


async def upload(
    http: aiohttp.ClientSession, base_url: str, acct: Account, data: bytes
) -> aiohttp.ClientResponse:
    async with http.post(f"{base_url}/v1/upload", headers={"X-API-Key": acct.key},
                         data=form(data, "up.txt")) as r:  # fmt: skip
        await r.read()
        return r


async def job_row(rt: Runtime, job_id: str) -> Any:
    return await rt.pool.fetchrow("SELECT * FROM jobs WHERE id = $1", uuid.UUID(job_id))


async def test_plans_set_retention_storage_quota_and_max_pending_from_the_cli(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONVERTD_DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("CONVERTD_DATA_DIR", str(settings.data_dir))
    name = f"cli-{uuid.uuid4().hex[:8]}"

    async def run(*argv: str) -> str:
        capsys.readouterr()
        await asyncio.to_thread(cli.main, list(argv))
        return capsys.readouterr().out

    out = json.loads(await run("plans", "set", name, "--retention", "24h", "--storage-quota", "2GB",
                               "--max-pending", "5", "--json"))  # fmt: skip
    assert {k: out[0][k] for k in ("retention", "storage_quota", "max_pending")} == {
        "retention": 86400, "storage_quota": 2 * 1024**3, "max_pending": 5,
    }  # fmt: skip
    assert " 1d " in await run("plans", "list")
    out = json.loads(await run("plans", "set", name, "--retention", "7d", "--json"))
    assert (out[0]["retention"], out[0]["storage_quota"], out[0]["max_pending"]) == (604800, 2 * 1024**3, 5)
    out = json.loads(await run("plans", "set", name, "--retention", "forever", "--storage-quota", "unlimited",
                               "--max-pending", "unlimited", "--json"))  # fmt: skip
    assert (out[0]["retention"], out[0]["storage_quota"], out[0]["max_pending"]) == (None, None, None)
    for bad, said in (
        (["--retention", "24x"], "'24x' is not a duration"),
        (["--retention", "0"], "retention must be positive"),
        (["--storage-quota", "lots"], "'lots' is not a size"),
    ):
        with pytest.raises(SystemExit) as exc:
            await run("plans", "set", name, *bad)
        assert said in f"{exc.value.code} {capsys.readouterr().err}"


async def test_the_sweeper_deletes_expired_files_and_a_download_then_answers_410(
    http: aiohttp.ClientSession, base_url: str, rt: Runtime, make_account: Any, make_plan: Any, gql: GraphQL
) -> None:
    short: Account = await make_account("short", await make_plan(retention=3600))
    keeper: Account = await make_account("keeper", await make_plan())  # no retention: kept
    done = await convert_hash(http, base_url, short)
    kept = await convert_hash(http, base_url, keeper)
    rows = {s["job_id"]: await job_row(rt, s["job_id"]) for s in (done, kept)}
    output = rt.storage.path(rows[done["job_id"]]["output_path"])
    kept_output = rt.storage.path(rows[kept["job_id"]]["output_path"])
    ids = rows[done["job_id"]]["input_uploads"]
    inputs = await rt.pool.fetch("SELECT * FROM uploads WHERE id = ANY($1)", ids)
    assert output.exists() and kept_output.exists() and rt.storage.path(inputs[0]["storage_path"]).exists()
    # both ended two hours ago; only the plan with a one-hour retention lets them go
    for row in rows.values():
        await rt.pool.execute("UPDATE jobs SET finished_at = now() - interval '2 hours' WHERE id = $1",
                              row["id"])  # fmt: skip
        await rt.pool.execute("UPDATE uploads SET created_at = now() - interval '2 hours' WHERE id = ANY($1)",
                              row["input_uploads"])  # fmt: skip

    await retention.sweep(rt)

    assert not output.exists() and not output.parent.exists()
    assert not rt.storage.path(inputs[0]["storage_path"]).exists()
    assert await rt.pool.fetchval("SELECT count(*) FROM uploads WHERE id = $1", inputs[0]["id"]) == 0
    assert kept_output.exists() and (await job_row(rt, kept["job_id"]))["expired_at"] is None
    async with http.get(f"{base_url}/v1/download/{done['job_id']}", headers={"X-API-Key": short.key}) as r:
        body = await r.json()
        assert r.status == 410 and body["error_code"] == "GONE"
        assert "retention" in body["message"] and "Convert the file again" in body["hint"]
    async with http.get(done["download_url"]) as r:  # the signed link handed out before
        assert r.status == 410
    async with http.get(f"{base_url}/v1/status/{done['job_id']}", headers={"X-API-Key": short.key}) as r:
        status = await r.json()
    assert status["status"] == "finished" and status["expired_at"] and "download_url" not in status
    job = (await gql(JOB, {"id": done["job_id"]}, key=short.key))["data"]["job"]
    assert job["expiredAt"] and job["downloadUrl"] is None
    async with http.get(kept["download_url"]) as r:
        assert r.status == 200


async def test_an_old_upload_a_waiting_job_still_needs_is_kept_until_it_ends(
    http: aiohttp.ClientSession, base_url: str, rt: Runtime, make_account: Any, make_plan: Any
) -> None:
    acct: Account = await make_account("waiting", await make_plan(retention=60))
    r = await upload(http, base_url, acct, b"needed later")
    assert r.status == 200
    up = await rt.pool.fetchrow("SELECT * FROM uploads WHERE account_id = $1", acct.account_id)
    await rt.pool.execute("UPDATE uploads SET created_at = now() - interval '1 day' WHERE id = $1", up["id"])
    # a job that has not run yet (not queued: no worker takes it during this test)
    waiting = await rt.pool.fetchval(
        "INSERT INTO jobs (account_id, filetype, input_format, output_format, input_uploads)"
        " VALUES ($1, 'hash', 'txt', 'txt', $2) RETURNING id",
        acct.account_id, [up["id"]],
    )  # fmt: skip
    await retention.sweep(rt)
    assert rt.storage.path(up["storage_path"]).exists()
    await rt.pool.execute("UPDATE jobs SET status = 'failed', finished_at = now() WHERE id = $1", waiting)
    await retention.sweep(rt)
    assert not rt.storage.path(up["storage_path"]).exists()
    assert await rt.pool.fetchval("SELECT count(*) FROM uploads WHERE id = $1", up["id"]) == 0


async def test_the_request_log_keeps_the_configured_number_of_days(rt: Runtime, account: Account) -> None:
    async def line(days_ago: int) -> int:
        return await rt.pool.fetchval(
            "INSERT INTO request_log (account_id, at, transport, route, status, credential)"
            " VALUES ($1, now() - make_interval(days => $2), 'rest', 'GET /v1/formats', 200, 'api_key')"
            " RETURNING id",
            account.account_id, days_ago,
        )  # fmt: skip

    old, recent = await line(91), await line(89)
    forever = dataclasses.replace(rt, settings=dataclasses.replace(rt.settings, request_log_days=0))
    await retention.sweep(forever)
    assert await rt.pool.fetchval("SELECT count(*) FROM request_log WHERE id = ANY($1)", [old, recent]) == 2
    assert rt.settings.request_log_days == 90  # the default
    await retention.sweep(rt)
    assert [r["id"] for r in await rt.pool.fetch("SELECT id FROM request_log WHERE id = ANY($1)",
                                                  [old, recent])] == [recent]  # fmt: skip


async def test_delete_removes_a_job_and_its_files_at_once(
    http: aiohttp.ClientSession, base_url: str, rt: Runtime, make_account: Any
) -> None:
    acct: Account = await make_account("deleter")
    other: Account = await make_account("other")
    status = await convert_hash(http, base_url, acct, b"12345")
    job_id = status["job_id"]
    row = await job_row(rt, job_id)
    input_row = await rt.pool.fetchrow("SELECT * FROM uploads WHERE id = $1", row["input_uploads"][0])
    files = [rt.storage.path(row["output_path"]), rt.storage.path(input_row["storage_path"])]
    assert all(f.exists() for f in files)

    async with http.delete(f"{base_url}/v1/jobs/{job_id}", headers={"X-API-Key": other.key}) as r:
        assert r.status == 404  # another account's job is as absent as an unknown one
    assert all(f.exists() for f in files)
    async with http.delete(f"{base_url}/v1/jobs/{job_id}", headers={"X-API-Key": acct.key}) as r:
        body = await r.json()
        assert r.status == 200, body
    assert body == {"ok": True, "job_id": job_id, "deleted": True, "freed_bytes": 5 + row["output_size"]}
    assert not any(f.exists() for f in files)
    assert await job_row(rt, job_id) is None
    for method, path in (("GET", f"/v1/status/{job_id}"), ("GET", f"/v1/download/{job_id}"),
                         ("DELETE", f"/v1/jobs/{job_id}")):  # fmt: skip
        async with http.request(method, f"{base_url}{path}", headers={"X-API-Key": acct.key}) as r:
            assert r.status == 404, path
    async with http.get(status["download_url"]) as r:
        assert r.status == 404


async def test_a_job_still_running_is_not_deleted(
    http: aiohttp.ClientSession, base_url: str, rt: Runtime, account: Account
) -> None:
    running = await rt.pool.fetchval(
        "INSERT INTO jobs (account_id, filetype, input_format, output_format, input_uploads, status)"
        " VALUES ($1, 'hash', 'txt', 'txt', '{}', 'processing') RETURNING id",
        account.account_id,
    )
    try:
        async with http.delete(f"{base_url}/v1/jobs/{running}", headers={"X-API-Key": account.key}) as r:
            body = await r.json()
            assert r.status == 409 and "Cancel it first" in body["hint"]
        assert await job_row(rt, str(running)) is not None
    finally:
        await rt.pool.execute("DELETE FROM jobs WHERE id = $1", running)


async def test_a_job_is_deleted_as_soon_as_it_finished_but_not_while_a_cancel_is_stopping_it(
    http: aiohttp.ClientSession, base_url: str, rt: Runtime, account: Account
) -> None:
    headers = {"X-API-Key": account.key}
    finished = (await convert_hash(http, base_url, account, b"done"))["job_id"]
    cancelled = await rt.pool.fetchval(
        "INSERT INTO jobs (account_id, filetype, input_format, output_format, input_uploads, status, error)"
        " VALUES ($1, 'hash', 'txt', 'txt', '{}', 'failed', 'Cancelled by its owner.') RETURNING id",
        account.account_id,
    )
    queued = await rt.queue.job(finished)
    assert queued is not None
    # both as the queue shows them for a moment: their worker has not let go of them yet
    # (the cancelled one only in the queue's record, on no list a worker takes from)
    twin = dataclasses.replace(queued, key=str(cancelled))
    for job in (queued, twin):
        await rt.queue.update(job, status=Status.ACTIVE)
    try:
        async with http.delete(f"{base_url}/v1/jobs/{cancelled}", headers=headers) as r:
            body = await r.json()
            assert r.status == 409 and r.headers["Retry-After"] == "5", body
        # the finished job's output is stored and recorded: nothing of it can still change
        async with http.delete(f"{base_url}/v1/jobs/{finished}", headers=headers) as r:
            assert r.status == 200, await r.text()
        assert await job_row(rt, finished) is None
    finally:
        await rt.redis.delete(twin.id)
        await rt.pool.execute("DELETE FROM jobs WHERE id = $1", cancelled)


async def test_deleting_a_job_keeps_an_upload_another_job_still_uses(
    http: aiohttp.ClientSession, base_url: str, rt: Runtime, account: Account
) -> None:
    r = await upload(http, base_url, account, b"shared input")
    assert r.status == 200
    up = await rt.pool.fetchrow("SELECT * FROM uploads WHERE account_id = $1", account.account_id)
    path = f"{up['token']}/{up['file_name']}"
    first = await convert_hash(http, base_url, account, file_path=path)
    second = await convert_hash(http, base_url, account, file_path=path)
    for job, still_there in ((first, True), (second, False)):
        headers = {"X-API-Key": account.key}
        async with http.delete(f"{base_url}/v1/jobs/{job['job_id']}", headers=headers) as r:
            assert r.status == 200
        assert rt.storage.path(up["storage_path"]).exists() is still_there


async def test_delete_job_on_graphql(
    http: aiohttp.ClientSession, base_url: str, gql: GraphQL, account: Account
) -> None:
    status = await convert_hash(http, base_url, account)
    deleted = await gql(operation("DeleteJob"), {"id": status["job_id"]}, key=account.key)
    assert deleted["data"]["deleteJob"]["id"] == status["job_id"]
    assert deleted["data"]["deleteJob"]["freedBytes"] > 3
    again = await gql(JOB, {"id": status["job_id"]}, key=account.key)
    assert again["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    again = await gql(operation("DeleteJob"), {"id": status["job_id"]}, key=account.key)
    assert again["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_storage_use_shows_in_keys_me_and_me(
    http: aiohttp.ClientSession, base_url: str, gql: GraphQL, rt: Runtime, make_account: Any, make_plan: Any
) -> None:
    acct: Account = await make_account("stores", await make_plan(retention=86400, storage_quota=10**6))
    async with http.get(f"{base_url}/v1/keys/me", headers={"X-API-Key": acct.key}) as r:
        storage = (await r.json())["storage"]
    assert storage == {"used_bytes": 0, "quota_bytes": 10**6, "retention_seconds": 86400}
    status = await convert_hash(http, base_url, acct, b"x" * 1000)
    used = 1000 + (await job_row(rt, status["job_id"]))["output_size"]
    async with http.get(f"{base_url}/v1/keys/me", headers={"X-API-Key": acct.key}) as r:
        assert (await r.json())["storage"]["used_bytes"] == used
    me = (await gql(operation("Me"), key=acct.key))["data"]["me"]
    assert me["storage"] == {"usedBytes": used, "quotaBytes": 10**6, "retentionSeconds": 86400}


async def test_the_storage_quota_refuses_with_413_and_a_hint_and_charges_nothing(
    http: aiohttp.ClientSession, base_url: str, gql: GraphQL, rt: Runtime, make_account: Any, make_plan: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    acct: Account = await make_account("full", await make_plan(storage_quota=1500))
    assert (await upload(http, base_url, acct, b"a" * 1000)).status == 200
    async with http.post(f"{base_url}/v1/upload", headers={"X-API-Key": acct.key},
                         data=form(b"b" * 1000, "more.txt")) as r:  # fmt: skip
        body = await r.json()
        assert r.status == 413 and body["error_code"] == "STORAGE_QUOTA_EXCEEDED"
        assert "1,500 bytes" in body["message"] and "DELETE /v1/jobs/{job_id}" in body["hint"]
    used = await rt.pool.fetchval("SELECT conversions_used FROM accounts WHERE id = $1", acct.account_id)
    converting = form(b"c" * 1000, "c.txt", filetype="hash", output_format="txt")
    async with http.post(f"{base_url}/v1/convert", headers={"X-API-Key": acct.key}, data=converting) as r:
        assert r.status == 413
    charged = "SELECT conversions_used FROM accounts WHERE id = $1"
    assert await rt.pool.fetchval(charged, acct.account_id) == used
    files = {"variables.files.0": ("g.txt", b"g" * 1000)}
    _, body = await gql.multipart(operation("Upload"), {"files": [None]}, files, key=acct.key)
    assert body["errors"][0]["extensions"]["code"] == "STORAGE_QUOTA_EXCEEDED"
    assert body["errors"][0]["extensions"]["status"] == 413
    # nothing refused was kept on disk
    assert len(list(rt.storage.path(f"uploads/{acct.account_id}").rglob("*.txt"))) == 1
    # converting what is stored adds no upload: it passes while under the quota
    up = await rt.pool.fetchrow("SELECT * FROM uploads WHERE account_id = $1", acct.account_id)
    done = await convert_hash(http, base_url, acct, file_path=f"{up['token']}/{up['file_name']}")
    # deleting frees the space again
    async with http.delete(f"{base_url}/v1/jobs/{done['job_id']}", headers={"X-API-Key": acct.key}) as r:
        assert r.status == 200
    assert (await upload(http, base_url, acct, b"b" * 1000)).status == 200

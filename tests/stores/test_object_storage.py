"""Uploads and outputs in an S3-compatible object store (CONVERTD_STORAGE_URL=s3://...).

A node (API and worker) of its own runs against moto's real S3 protocol server and the
session's PostgreSQL and Redis, on its own queue; every check reads the bucket itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image
from tusclient import client as tus_client

from app.api.server import build_app
from app.config import Settings
from app.runtime import Runtime
from app.services import retention
from app.storage import Storage
from app.stores.s3 import PART_SIZE, S3Store
from app.worker import build_worker
from tests.conftest import Account, S3Server, free_port, png_bytes, wait_for_status
from tests.helpers import start_local, wait_until
from tests.pdf_samples import pdf_bytes

# a node of its own and moto's server: seconds a test, run with the slow part
pytestmark = [pytest.mark.slow, pytest.mark.serial]


@dataclasses.dataclass
class Node:
    base: str
    rt: Runtime
    s3: S3Server
    prefix: str

    def keys(self, under: str = "") -> list[str]:
        return self.s3.keys(f"{self.prefix}/{under}")


class Gate:
    """A TCP relay between the node and the store: closing it is the store going
    unreachable (refused connections, cut transfers) while the store keeps its data."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.links):
            writer.transport.abort()
        await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.links -= {writer, up_writer}


@contextlib.asynccontextmanager
async def node(
    settings: Settings, s3: S3Server, tmp: Any, *, endpoint: str | None = None, **changes: Any
) -> AsyncIterator[Node]:
    """API and worker of one deployment whose files live under their own bucket prefix."""
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    own = dataclasses.replace(
        settings,
        data_dir=tmp,
        storage_url=f"s3://{s3.bucket}/{prefix}",
        s3_endpoint_url=endpoint or s3.endpoint,
        queue=dataclasses.replace(settings.queue, name=f"convertd-{prefix}"),
        **changes,
    )
    rt = await Runtime.open(own)
    worker = build_worker(rt)
    task = asyncio.create_task(worker.start())
    runner, url = await start_local(build_app(rt))
    try:
        yield Node(url, rt, s3, prefix)
    finally:
        await runner.cleanup()
        await worker.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await rt.close()


@pytest.fixture(scope="module")
async def s3node(
    rt: Runtime, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Node]:
    # uploads past one part (8 MiB) go up in parts: the node takes bigger files than the session's
    async with node(
        rt.settings, s3_server, tmp_path_factory.mktemp("s3node"), max_upload_bytes=32 << 20
    ) as n:
        yield n


async def _submit(http: aiohttp.ClientSession, n: Node, key: str, form: aiohttp.FormData) -> dict[str, Any]:
    async with http.post(f"{n.base}/v1/convert", data=form, headers={"X-API-Key": key}) as r:
        body = await r.json()
    assert r.status == 202, body
    return await wait_for_status(http, n.base, key, body["job_id"], timeout=120)


def _form(
    files: list[tuple[str, bytes]], filetype: str, output_format: str, **fields: str
) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, data in files:
        form.add_field("file", data, filename=name)
    for name, value in {"filetype": filetype, "output_format": output_format, **fields}.items():
        form.add_field(name, value)
    return form


async def test_upload_convert_and_download_through_the_store(
    http: aiohttp.ClientSession, s3node: Node, account: Account
) -> None:
    # an upload bigger than one part goes up as a multipart upload, byte for byte
    big = png_bytes((2400, 1800), "navy") + bytes(range(256)) * (PART_SIZE // 256 + 1000)
    form = aiohttp.FormData()
    form.add_field("file", big, filename="big.png")
    async with http.post(f"{s3node.base}/v1/upload", data=form, headers={"X-API-Key": account.key}) as r:
        uploaded = (await r.json())["files"][0]
        assert r.status == 200, uploaded
    key = f"uploads/{account.account_id}/{uploaded['file_path']}"
    assert s3node.keys(key) == [f"{s3node.prefix}/{key}"]
    stored = s3node.s3.client().get_object(Bucket=s3node.s3.bucket, Key=f"{s3node.prefix}/{key}")
    assert stored["ContentLength"] == len(big) and stored["Body"].read() == big
    assert not list((s3node.rt.storage.root / "incoming").iterdir())  # nothing left in the spool

    # converted by file_path: the API checks its content from the store, the worker fetches it
    form = _form([], "image", "webp", file_path=uploaded["file_path"])
    done = await _submit(http, s3node, account.key, form)
    assert done["status"] == "finished", done
    out_keys = s3node.keys(f"outputs/{account.account_id}/{done['job_id']}/")
    assert [k.rsplit("/", 1)[1] for k in out_keys] == ["big.webp"]
    async with http.get(done["download_url"]) as r:  # signed: no key, streamed by the API
        assert r.status == 200 and r.headers["Content-Length"] == str(done["file_size"])
        assert 'filename="big.webp"' in r.headers["Content-Disposition"]
        image = Image.open(io.BytesIO(await r.read()))
        assert (image.format, image.size) == ("WEBP", (2400, 1800))
    # the job's private directories are gone from the worker's disk
    assert not list((s3node.rt.storage.root / "work").iterdir())


async def test_several_inputs_and_several_outputs(
    http: aiohttp.ClientSession, s3node: Node, account: Account
) -> None:
    files = [("a.txt", b"alpha"), ("b.csv", b"x,y\n1,2\n"), ("c.png", png_bytes())]
    merged = await _submit(http, s3node, account.key, _form(files, "archive", "zip"))
    assert merged["status"] == "finished", merged
    async with http.get(merged["download_url"]) as r:
        with zipfile.ZipFile(io.BytesIO(await r.read())) as z:
            assert {n: z.read(n) for n in z.namelist()} == dict(files)

    pages = await _submit(
        http, s3node, account.key, _form([("three.pdf", pdf_bytes(3, "render"))], "pdf", "png")
    )
    assert pages["status"] == "finished", pages
    async with http.get(
        f"{s3node.base}/v1/download/{pages['job_id']}", headers={"X-API-Key": account.key}
    ) as r:
        with zipfile.ZipFile(io.BytesIO(await r.read())) as z:
            names = sorted(z.namelist())
    assert len(names) == 3 and sorted(pages["items"]) == names


async def test_url_imports_and_tus_uploads_land_in_the_store(
    http: aiohttp.ClientSession, s3node: Node, account: Account, tmp_path: Any
) -> None:
    """The other ways in (app/services/url_import.py, tus.py) end as ordinary uploads: in the store."""
    photo = png_bytes((30, 20), "olive")

    async def serve_photo(request: web.Request) -> web.Response:
        return web.Response(body=photo, content_type="image/png")

    origin = web.Application()
    origin.router.add_get("/photo.png", serve_photo)
    runner, origin_url = await start_local(origin)
    url = f"{origin_url}/photo.png"
    try:
        body = {"filetype": "image", "output_format": "webp", "url": url}
        async with http.post(f"{s3node.base}/v1/convert", json=body, headers={"X-API-Key": account.key}) as r:
            job = await r.json()
            assert r.status == 202, job
    finally:
        await runner.cleanup()
    done = await wait_for_status(http, s3node.base, account.key, job["job_id"])
    assert done["status"] == "finished", done
    assert any(k.endswith("/photo.png") for k in s3node.keys(f"uploads/{account.account_id}/"))

    data = os.urandom(300_000)
    source = tmp_path / "resumed.bin"
    source.write_bytes(data)
    client = tus_client.TusClient(f"{s3node.base}/v1/uploads/tus/", headers={"X-API-Key": account.key})
    uploader = client.async_uploader(
        file_path=str(source), chunk_size=100_000, metadata={"filename": "resumed.bin"}
    )
    await uploader.upload()
    async with http.head(uploader.url, headers={"X-API-Key": account.key, "Tus-Resumable": "1.0.0"}) as r:
        file_path = r.headers["X-File-Path"]
    key = f"{s3node.prefix}/uploads/{account.account_id}/{file_path}"
    assert s3node.s3.client().get_object(Bucket=s3node.s3.bucket, Key=key)["Body"].read() == data
    hashed = await _submit(http, s3node, account.key, _form([], "hash", "json", file_path=file_path))
    async with http.get(hashed["download_url"]) as r:
        assert json.loads(await r.read())["sha256"] == hashlib.sha256(data).hexdigest()


async def test_presigned_downloads_redirect_to_the_store(
    http: aiohttp.ClientSession, s3node: Node, account: Account
) -> None:
    done = await _submit(http, s3node, account.key, _form([("data.bin", b"presign me")], "hash", "json"))
    assert done["status"] == "finished", done
    files = S3Store(s3node.s3.bucket, s3node.prefix, endpoint_url=s3node.s3.endpoint, presign=True)
    await files.start()
    presigning = dataclasses.replace(s3node.rt, storage=Storage(s3node.rt.storage.root, "test-secret", files))
    runner, base = await start_local(build_app(presigning))
    try:
        # the signed download_url needs no key; it answers with a redirect into the store
        url = done["download_url"].replace(s3node.base, base)
        async with http.get(url, allow_redirects=False) as r:
            assert r.status == 302, await r.text()
            location = r.headers["Location"]
        assert location.startswith(s3node.s3.endpoint) and "X-Amz-Signature" in location
        async with http.get(location) as r:  # straight from the store, with our headers
            assert r.status == 200
            assert json.loads(await r.read())["sha256"] == hashlib.sha256(b"presign me").hexdigest()
            assert 'filename="data.json"' in r.headers["Content-Disposition"]
        # a tampered signature is still refused by the API before any redirect
        async with http.get(url.replace("signature=", "signature=0"), allow_redirects=False) as r:
            assert r.status == 403
    finally:
        await runner.cleanup()
        await files.close()


async def test_deleting_a_job_and_retention_delete_the_objects(
    http: aiohttp.ClientSession, s3node: Node, make_account: Any, make_plan: Any
) -> None:
    acct: Account = await make_account("s3-delete", await make_plan(retention=3600))
    first = await _submit(http, s3node, acct.key, _form([("one.bin", b"one")], "hash", "json"))
    second = await _submit(http, s3node, acct.key, _form([("two.bin", b"two")], "hash", "json"))
    mine = f"{s3node.prefix}/uploads/{acct.account_id}/"
    assert len(s3node.keys(f"uploads/{acct.account_id}/")) == 2
    assert len(s3node.keys(f"outputs/{acct.account_id}/")) == 2

    async with http.delete(f"{s3node.base}/v1/jobs/{first['job_id']}", headers={"X-API-Key": acct.key}) as r:
        assert r.status == 200, await r.text()
    assert s3node.keys(f"outputs/{acct.account_id}/") == [
        f"{s3node.prefix}/outputs/{acct.account_id}/{second['job_id']}/two.json"
    ]
    left = [k for k in s3node.keys(f"uploads/{acct.account_id}/") if k.startswith(mine)]
    assert len(left) == 1 and left[0].endswith("/two.bin")

    # the retention sweeper: the second job ended two hours ago on a one-hour plan
    await s3node.rt.pool.execute(
        "UPDATE jobs SET finished_at = now() - interval '2 hours' WHERE id = $1", uuid.UUID(second["job_id"])
    )
    await s3node.rt.pool.execute(
        "UPDATE uploads SET created_at = now() - interval '2 hours' WHERE account_id = $1", acct.account_id
    )
    await retention.sweep(s3node.rt)
    assert s3node.keys(f"outputs/{acct.account_id}/") == []
    assert s3node.keys(f"uploads/{acct.account_id}/") == []
    async with http.get(second["download_url"]) as r:
        assert r.status == 410


def _assert_unavailable(status: int, headers: Any, body: dict[str, Any]) -> None:
    assert status == 503, body
    assert int(headers["Retry-After"]) > 0
    assert body["error_code"] == "SERVICE_UNAVAILABLE" and "object store" in body["message"]
    assert "try again" in body["hint"].lower()


@pytest.mark.slow  # a node of its own, requests that wait out the client's retries
async def test_store_unreachable_answers_503_and_loses_nothing(
    http: aiohttp.ClientSession, rt: Runtime, s3_server: S3Server, tmp_path: Any, account: Account
) -> None:
    gate = Gate(int(s3_server.endpoint.rsplit(":", 1)[1]))
    await gate.open()
    endpoint = f"http://127.0.0.1:{gate.port}"
    headers = {"X-API-Key": account.key}
    async with node(rt.settings, s3_server, tmp_path, endpoint=endpoint) as n:
        done = await _submit(http, n, account.key, _form([("kept.bin", b"kept")], "hash", "json"))
        form = aiohttp.FormData()
        form.add_field("file", b"later", filename="later.bin")
        async with http.post(f"{n.base}/v1/upload", data=form, headers=headers) as r:
            later = (await r.json())["files"][0]
        used = await rt.pool.fetchval(
            "SELECT conversions_used FROM accounts WHERE id = $1", account.account_id
        )
        uploads = await rt.pool.fetchval(
            "SELECT count(*) FROM uploads WHERE account_id = $1", account.account_id
        )

        await gate.close()  # the store is out of reach
        async with http.post(f"{n.base}/v1/convert", data=_form([("x.bin", b"x")], "hash", "json"),
                             headers=headers) as r:  # fmt: skip
            _assert_unavailable(r.status, r.headers, await r.json())
        async with http.post(f"{n.base}/v1/upload", data=_form([("y.bin", b"y")], "hash", "json"),
                             headers=headers) as r:  # fmt: skip
            _assert_unavailable(r.status, r.headers, await r.json())
        async with http.get(done["download_url"]) as r:
            _assert_unavailable(r.status, r.headers, await r.json())
        async with http.delete(f"{n.base}/v1/jobs/{done['job_id']}", headers=headers) as r:
            _assert_unavailable(r.status, r.headers, await r.json())
        async with http.get(f"{n.base}/readyz") as r:  # a load balancer takes the node out
            ready = await r.json()
            assert r.status == 503 and ready["components"]["storage"]["ok"] is False, ready
        # nothing was charged or half-stored, the job is still there, the spool is empty
        assert (
            await rt.pool.fetchval("SELECT conversions_used FROM accounts WHERE id = $1", account.account_id)
            == used
        )
        assert (
            await rt.pool.fetchval("SELECT count(*) FROM uploads WHERE account_id = $1", account.account_id)
            == uploads
        )
        assert (
            await rt.pool.fetchval("SELECT count(*) FROM jobs WHERE id = $1", uuid.UUID(done["job_id"])) == 1
        )
        assert not list((n.rt.storage.root / "incoming").iterdir())

        # a job queued meanwhile (its input already stored) waits for the store, then runs
        async with http.post(f"{n.base}/v1/convert", headers=headers, json={
            "filetype": "hash", "output_format": "json", "file_path": later["file_path"]}) as r:  # fmt: skip
            assert r.status == 202, await r.text()
            waiting = (await r.json())["job_id"]

        # a worker took it (processing) and cannot fetch its input: it waits for the store
        async def taken() -> bool:
            status = await n.rt.pool.fetchval("SELECT status FROM jobs WHERE id = $1", uuid.UUID(waiting))
            return bool(status == "processing")

        await wait_until(taken, 60, "a worker taking the job")
        await gate.open()
        finished = await wait_for_status(http, n.base, account.key, waiting, timeout=60)
        async with http.get(f"{n.base}/readyz") as r:
            storage = (await r.json())["components"]["storage"]
            assert storage["ok"] and storage["kind"] == "object store", storage
        assert finished["status"] == "finished", finished
        async with http.get(finished["download_url"]) as r:
            assert json.loads(await r.read())["sha256"] == hashlib.sha256(b"later").hexdigest()
        async with http.get(done["download_url"]) as r:
            assert json.loads(await r.read())["sha256"] == hashlib.sha256(b"kept").hexdigest()
    await gate.close()


@pytest.mark.slow  # two `convertd` processes
def test_a_storage_url_that_names_no_store_stops_the_process_with_a_hint(tmp_path: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERTD_")}
    env.update(CONVERTD_DATA_DIR=str(tmp_path), CONVERTD_STORAGE_URL="s3:/no-bucket")
    for command in ("serve", "worker"):
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", command], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 1, done
        assert "is not a storage URL: use file:///path/to/dir or s3://bucket[/prefix]" in done.stderr

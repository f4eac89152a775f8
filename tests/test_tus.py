"""tus 1.0 resumable uploads: the tuspy client end to end, a PATCH whose connection drops
halfway and resumes from the server's offset, and the protocol's refusals."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from tusclient import client as tus_client

from app.runtime import Runtime
from app.services import tus
from tests.conftest import Account

TUS = {"Tus-Resumable": "1.0.0"}


def _auth(account: Account) -> dict[str, str]:
    return {"X-API-Key": account.key, **TUS}


async def _hash_of(http: aiohttp.ClientSession, base_url: str, key: str, file_path: str) -> str:
    """The sha256 the service computes of the stored upload (a real conversion of it)."""
    body = {"filetype": "hash", "output_format": "json", "file_path": file_path, "wait": 30}
    async with http.post(f"{base_url}/v1/convert", json=body, headers={"X-API-Key": key}) as r:
        assert r.status == 200, await r.text()
        return json.loads(await r.read())["sha256"]


async def _create(http: aiohttp.ClientSession, base_url: str, account: Account, length: int) -> str:
    headers = {**_auth(account), "Upload-Length": str(length), "Upload-Metadata": "filename ZGF0YS5iaW4="}
    async with http.post(f"{base_url}/v1/uploads/tus/", headers=headers) as r:
        assert r.status == 201, await r.text()
        assert r.headers["Tus-Resumable"] == "1.0.0" and r.headers["Upload-Expires"]
        return r.headers["Location"]


async def _head(http: aiohttp.ClientSession, url: str, account: Account) -> aiohttp.ClientResponse:
    async with http.head(url, headers=_auth(account)) as r:
        return r


async def test_tuspy_uploads_in_chunks_and_the_upload_converts(
    http: aiohttp.ClientSession, base_url: str, account: Account, tmp_path: Path
) -> None:
    data = os.urandom(1_300_000)
    source = tmp_path / "data.bin"
    source.write_bytes(data)
    client = tus_client.TusClient(f"{base_url}/v1/uploads/tus/", headers={"X-API-Key": account.key})
    uploader = client.async_uploader(
        file_path=str(source), chunk_size=256 * 1024, metadata={"filename": "data.bin"}
    )
    await uploader.upload()
    assert uploader.offset == len(data)

    r = await _head(http, uploader.url, account)
    assert r.status == 200 and r.headers["Upload-Offset"] == r.headers["Upload-Length"] == str(len(data))
    file_path = r.headers["X-File-Path"]
    assert file_path.endswith("/data.bin")
    async with http.get(uploader.url, headers=_auth(account)) as g:
        info = await g.json()
    assert info["finished"] and info["file_path"] == file_path and info["upload_offset"] == len(data)
    assert await _hash_of(http, base_url, account.key, file_path) == hashlib.sha256(data).hexdigest()


async def test_tuspy_resumes_a_stopped_upload_from_the_server_offset(
    http: aiohttp.ClientSession, base_url: str, account: Account, tmp_path: Path
) -> None:
    data = os.urandom(900_000)
    source = tmp_path / "resume.bin"
    source.write_bytes(data)
    client = tus_client.TusClient(f"{base_url}/v1/uploads/tus/", headers={"X-API-Key": account.key})

    def first_half() -> str:
        uploader = client.uploader(file_path=str(source), chunk_size=200_000, metadata={"filename": "r.bin"})
        uploader.upload(stop_at=400_000)
        return uploader.url

    url = await asyncio.to_thread(first_half)
    assert (await _head(http, url, account)).headers["Upload-Offset"] == "400000"

    def the_rest() -> int:
        # a new client process would do this: only the URL is known; the offset is asked
        uploader = client.uploader(file_path=str(source), url=url, chunk_size=200_000)
        resumed_at = uploader.offset
        uploader.upload()
        return resumed_at

    assert await asyncio.to_thread(the_rest) == 400_000
    file_path = (await _head(http, url, account)).headers["X-File-Path"]
    assert await _hash_of(http, base_url, account.key, file_path) == hashlib.sha256(data).hexdigest()


async def test_a_dropped_patch_keeps_its_bytes_and_resumes_from_the_reported_offset(
    rt: Runtime, http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    data = os.urandom(2_000_000)
    url = await _create(http, base_url, account, len(data))
    upload_id = url.rsplit("/", 1)[1]
    half = len(data) // 2

    # a raw PATCH announcing every byte, of which only half is sent before the connection dies
    parts = urlsplit(url)
    _reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = (
        f"PATCH {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nX-API-Key: {account.key}\r\n"
        f"Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    writer.write(head.encode() + data[:half])
    await writer.drain()
    partial = tus.partial_path(rt, upload_id)
    while partial.stat().st_size < half // 2:  # the server is writing what arrived
        await asyncio.sleep(0.02)
    seen = partial.stat().st_size
    writer.transport.abort()  # no FIN handshake, no rest of the body: a broken connection

    # HEAD waits for the broken PATCH to record what it wrote
    offset = 0
    while offset < seen:
        r = await _head(http, url, account)
        assert r.status == 200
        offset = int(r.headers["Upload-Offset"])
    assert seen <= offset <= half and "X-File-Path" not in r.headers

    # a PATCH from the wrong offset is refused and told the right one
    headers = {**_auth(account), "Content-Type": "application/offset+octet-stream"}
    async with http.patch(url, data=data[:10], headers={**headers, "Upload-Offset": "0"}) as bad:
        assert bad.status == 409 and bad.headers["Upload-Offset"] == str(offset)
        assert (await bad.json())["error_code"] == "OFFSET_MISMATCH"

    async with http.patch(url, data=data[offset:], headers={**headers, "Upload-Offset": str(offset)}) as ok:
        assert ok.status == 204, await ok.text()
        assert ok.headers["Upload-Offset"] == str(len(data))
        file_path = ok.headers["X-File-Path"]
    assert await _hash_of(http, base_url, account.key, file_path) == hashlib.sha256(data).hexdigest()


async def test_options_advertises_the_protocol(
    http: aiohttp.ClientSession,
    base_url: str,
    make_plan: Callable[..., Any],
    make_account: Callable[..., Any],
) -> None:
    account = await make_account(plan=await make_plan(max_file_size=1000))
    async with http.options(f"{base_url}/v1/uploads/tus/", headers={"X-API-Key": account.key}) as r:
        assert r.status == 204
        assert r.headers["Tus-Version"] == "1.0.0" and r.headers["Tus-Resumable"] == "1.0.0"
        assert set(r.headers["Tus-Extension"].split(",")) == {"creation", "termination", "expiration"}
        assert r.headers["Tus-Max-Size"] == "1000"


async def test_protocol_refusals(http: aiohttp.ClientSession, base_url: str, account: Account) -> None:
    url = await _create(http, base_url, account, 100)
    async with http.head(url, headers={"X-API-Key": account.key}) as r:  # no Tus-Resumable
        assert r.status == 412 and r.headers["Tus-Version"] == "1.0.0"
    async with http.head(url, headers=TUS) as r:  # no key
        assert r.status == 401 and r.headers["Tus-Resumable"] == "1.0.0"
    patch = {**_auth(account), "Upload-Offset": "0"}
    async with http.patch(url, data=b"x", headers={**patch, "Content-Type": "text/plain"}) as r:
        assert r.status == 415
    octet = {**patch, "Content-Type": "application/offset+octet-stream"}
    async with http.patch(url, data=b"x" * 101, headers=octet) as r:  # past Upload-Length
        assert r.status == 413 and (await r.json())["hint"]
    async with http.patch(url, data=b"x", headers={**octet, "Upload-Offset": "-1"}) as r:
        assert r.status == 400
    async with http.post(f"{base_url}/v1/uploads/tus/", headers=_auth(account)) as r:  # no length
        assert r.status == 400 and "Upload-Length" in (await r.json())["message"]
    bad_meta = {**_auth(account), "Upload-Length": "5", "Upload-Metadata": "filename !!!"}
    async with http.post(f"{base_url}/v1/uploads/tus/", headers=bad_meta) as r:
        assert r.status == 400


async def test_another_account_sees_nothing(
    http: aiohttp.ClientSession, base_url: str, account: Account, make_account: Callable[..., Any]
) -> None:
    url = await _create(http, base_url, account, 10)
    other = await make_account(name="other")
    octet = {**_auth(other), "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    for method, headers in (("HEAD", _auth(other)), ("GET", _auth(other)), ("PATCH", octet),
                            ("DELETE", _auth(other))):  # fmt: skip
        async with http.request(method, url, headers=headers, data=b"0123456789") as r:
            assert r.status == 404, method
    assert (await _head(http, url, account)).headers["Upload-Offset"] == "0"
    for odd in ("..%2F..%2Fsecret", "UPPER" * 6 + "AB", "0" * 31):
        async with http.head(f"{base_url}/v1/uploads/tus/{odd}", headers=_auth(account)) as r:
            assert r.status == 404, odd


async def test_delete_terminates_the_upload(
    rt: Runtime, http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    url = await _create(http, base_url, account, 10)
    partial = tus.partial_path(rt, url.rsplit("/", 1)[1])
    headers = {**_auth(account), "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    async with http.patch(url, data=b"01234", headers=headers) as r:
        assert r.status == 204 and r.headers["Upload-Offset"] == "5"
    assert partial.read_bytes() == b"01234"
    async with http.delete(url, headers=_auth(account)) as r:
        assert r.status == 204 and r.headers["Tus-Resumable"] == "1.0.0"
    assert (await _head(http, url, account)).status == 404
    assert not partial.exists()


async def test_expired_uploads_are_gone_and_swept(
    rt: Runtime,
    http: aiohttp.ClientSession,
    make_server: Callable[..., Any],
    account: Account,
) -> None:
    server = await make_server(tus_expiry=0)
    first = await _create(http, server, account, 10)
    async with http.head(first, headers=_auth(account)) as r:
        assert r.status == 410 and r.headers["Tus-Resumable"] == "1.0.0"
    assert (await _head(http, first, account)).status == 404  # removed when found expired

    second = await _create(http, server, account, 10)
    partial = tus.partial_path(rt, second.rsplit("/", 1)[1])
    assert partial.exists()
    assert await tus.sweep(rt) >= 1
    assert not partial.exists()
    assert await rt.pool.fetchval("SELECT count(*) FROM tus_uploads WHERE expires_at <= now()") == 0


async def test_limits_and_quota_as_for_uploads(
    http: aiohttp.ClientSession,
    base_url: str,
    make_plan: Callable[..., Any],
    make_account: Callable[..., Any],
    rt: Runtime,
) -> None:
    small = await make_account(plan=await make_plan(max_file_size=1000, storage_quota=2500))

    async def create(length: int) -> aiohttp.ClientResponse:
        headers = {**_auth(small), "Upload-Length": str(length)}
        async with http.post(f"{base_url}/v1/uploads/tus/", headers=headers) as r:
            await r.read()
            return r

    over_server = await create(rt.settings.max_upload_bytes + 1)
    assert over_server.status == 413
    assert (await create(1001)).status == 413  # the plan's file limit
    assert (await create(1000)).status == 201
    assert (await create(1000)).status == 201
    # two unfinished uploads hold 2000 of the 2500 byte quota: a third does not fit
    third = await create(1000)
    assert third.status == 413


async def test_zero_length_upload_is_finished_at_once(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    url = await _create(http, base_url, account, 0)
    r = await _head(http, url, account)
    assert r.headers["Upload-Offset"] == "0" and r.headers["X-File-Path"].endswith("/data.bin")


@pytest.mark.parametrize("chunk", [1, 7])
async def test_tiny_patches_add_up(
    http: aiohttp.ClientSession, base_url: str, account: Account, chunk: int
) -> None:
    data = b"hello, resumable world"
    url = await _create(http, base_url, account, len(data))
    offset = 0
    headers = {**_auth(account), "Content-Type": "application/offset+octet-stream"}
    while offset < len(data):
        piece = data[offset : offset + chunk]
        async with http.patch(url, data=piece, headers={**headers, "Upload-Offset": str(offset)}) as r:
            assert r.status == 204
            offset = int(r.headers["Upload-Offset"])
    file_path = (await _head(http, url, account)).headers["X-File-Path"]
    assert await _hash_of(http, base_url, account.key, file_path) == hashlib.sha256(data).hexdigest()

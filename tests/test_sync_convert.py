"""Synchronous convert: `wait` answers with the converted file when the job ends in time."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from tests.conftest import Account, GraphQL, operation, png_bytes, wait_for_status
from tests.test_media_progress import make_video


def _form(name: str, data: bytes, filetype: str, out: str, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name)
    form.add_field("filetype", filetype)
    form.add_field("output_format", out)
    for field, value in fields.items():
        form.add_field(field, value)
    return form


async def test_a_finished_job_answers_with_the_file_itself(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    headers = {"X-API-Key": account.key}
    form = _form("photo.png", png_bytes((120, 80)), "image", "webp", wait="30", options='{"width": 60}')
    async with http.post(f"{base_url}/v1/convert", data=form, headers=headers) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"] == "image/webp"
        assert r.headers["Content-Disposition"].startswith('attachment; filename="photo.webp"')
        job_id = r.headers["X-Job-Id"]
        body = await r.read()
    with Image.open(io.BytesIO(body)) as img:
        assert (img.format, img.size) == ("WEBP", (60, 40))
    # the job exists like any other, with the same output
    status = await wait_for_status(http, base_url, account.key, job_id, timeout=5)
    assert status["status"] == "finished"
    async with http.get(f"{base_url}/v1/download/{job_id}", headers=headers) as r:
        assert await r.read() == body


async def test_wait_as_a_query_parameter_and_json_when_asked(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    data = b"hello world"
    headers = {"X-API-Key": account.key, "Accept": "application/json"}
    async with http.post(
        f"{base_url}/v1/convert?wait=20", data=_form("a.txt", data, "hash", "json"), headers=headers
    ) as r:
        assert r.status == 200
        status = await r.json()
    assert status["status"] == "finished" and status["download_url"] and r.headers["X-Job-Id"]
    async with http.get(status["download_url"]) as r:
        assert json.loads(await r.read())["sha256"] == hashlib.sha256(data).hexdigest()


async def test_a_failed_job_answers_with_its_error(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    # a PNG header on garbage: it passes the type check, then fails in the converter
    broken = png_bytes()[:60] + b"\0" * 200
    form = _form("broken.png", broken, "image", "webp", wait="30")
    async with http.post(f"{base_url}/v1/convert", data=form, headers={"X-API-Key": account.key}) as r:
        body = await r.json()
        assert r.status == 422, body
        assert body["error_code"] == "CONVERSION_FAILED"
        assert "damaged" in body["message"] and body["hint"]
        job_id = r.headers["X-Job-Id"]
    # the failed job exists, refunded like any failed job
    assert (await wait_for_status(http, base_url, account.key, job_id))["status"] == "failed"
    async with http.get(f"{base_url}/v1/keys/me", headers={"X-API-Key": account.key}) as r:
        assert (await r.json())["conversions_used"] == 0


@pytest.mark.slow  # waits out its wait by design
async def test_a_job_longer_than_the_wait_answers_202_and_goes_on(
    http: aiohttp.ClientSession, base_url: str, account: Account, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.mp4"
    make_video(clip, seconds=10)
    form = _form("clip.mp4", clip.read_bytes(), "video", "webm", wait="1", options='{"codec": "vp9"}')
    async with http.post(f"{base_url}/v1/convert", data=form, headers={"X-API-Key": account.key}) as r:
        assert r.status == 202
        job = await r.json()
    assert job["status"] in ("pending", "processing")
    final = await wait_for_status(http, base_url, account.key, job["job_id"], timeout=120)
    assert final["status"] == "finished"


async def test_a_bad_wait_is_refused_before_anything_is_charged(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    for wait in ("0", "61", "soon"):
        form = _form("a.txt", b"abc", "hash", "json", wait=wait)
        async with http.post(f"{base_url}/v1/convert", data=form, headers={"X-API-Key": account.key}) as r:
            assert r.status == 400
            body = await r.json()
            assert body["field"] == "wait" and body["hint"]
    async with http.get(f"{base_url}/v1/keys/me", headers={"X-API-Key": account.key}) as r:
        assert (await r.json())["conversions_used"] == 0


async def test_graphql_convert_with_wait_returns_the_ended_job(gql: GraphQL, account: Account) -> None:
    status, body = await gql.multipart(
        operation("Convert"),
        {"input": {"file": None, "filetype": "hash", "outputFormat": "txt", "wait": 20}},
        {"variables.input.file": ("a.txt", b"abc")},
        key=account.key,
    )
    assert status == 200, body
    assert body["data"]["convert"]["status"] == "FINISHED"

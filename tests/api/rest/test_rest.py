"""The /v1 routes exactly as the SkyConvert document shows them."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import stat
import wave
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from PIL import Image

from tests.conftest import Account, GraphQL, png_bytes, wait_for_status
from tests.helpers import queue_tiny_job


def seed_python_example(base: str, api_key: str, workdir: Path) -> bytes:
    """The document's own Python example, verbatim but for BASE, the key and file paths."""
    import time

    API_KEY = api_key
    BASE = f"{base}/v1"

    # 1. Start conversion
    resp = requests.post(
        f"{BASE}/convert",
        headers={"X-API-Key": API_KEY},
        files={"file": open(workdir / "input.png", "rb")},  # noqa: SIM115
        data={"filetype": "image", "output_format": "webp"},
    )
    job = resp.json()
    job_id = job["job_id"]

    # 2. Poll until done
    while True:
        status = requests.get(f"{BASE}/status/{job_id}", headers={"X-API-Key": API_KEY}).json()
        if status["status"] == "finished":
            break
        if status["status"] == "failed":
            raise Exception(status.get("error"))
        time.sleep(0.2)  # the document sleeps 2 s; the loop is the same

    # 3. Download result
    out = requests.get(f"{BASE}/download/{job_id}", headers={"X-API-Key": API_KEY})
    with open(workdir / "output.webp", "wb") as f:
        f.write(out.content)
    return (workdir / "output.webp").read_bytes()


async def test_seed_python_example_converts_png_to_webp(
    base_url: str, account: Account, tmp_path: Path
) -> None:
    (tmp_path / "input.png").write_bytes(png_bytes((80, 60), "blue"))
    data = await asyncio.to_thread(seed_python_example, base_url, account.key, tmp_path)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "WEBP"
        assert img.size == (80, 60)
        r, g, b = img.convert("RGB").getpixel((40, 30))
        assert b > 200 and r < 40 and g < 40


async def test_api_info_needs_no_key(http: aiohttp.ClientSession, base_url: str) -> None:
    async with http.get(f"{base_url}/v1/") as resp:
        body = await resp.json()
    assert resp.status == 200 and body["ok"] is True
    assert "POST /v1/convert" in body["endpoints"]


async def test_formats_grouped_by_filetype(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    async with http.get(f"{base_url}/v1/formats", headers={"X-API-Key": account.key}) as resp:
        body = await resp.json()
    assert resp.status == 200 and body["ok"] is True
    image = body["filetypes"]["image"]
    for fmt in ("jpg", "png", "webp", "gif", "bmp", "tiff"):
        assert fmt in image["input_formats"]
    assert "ico" in image["output_formats"]
    assert "conversions" not in image
    async with http.get(f"{base_url}/v1/formats?options=1", headers={"X-API-Key": account.key}) as resp:
        detailed = (await resp.json())["filetypes"]
    quality = detailed["image"]["conversions"]["png"]["jpg"]["properties"]["quality"]
    assert quality["type"] == "integer" and quality["minimum"] == 1
    assert "sha256" in json.dumps(detailed["hash"]["conversions"]["txt"]["json"])


async def test_upload_several_files_then_convert_by_file_path(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    form = aiohttp.FormData()
    form.add_field("file", png_bytes(), filename="a.png")
    form.add_field("file", b"hello world\n", filename="notes.txt")
    async with http.post(f"{base_url}/v1/upload", data=form, headers={"X-API-Key": account.key}) as resp:
        body = await resp.json()
    assert resp.status == 200, body
    names = [f["file_name"] for f in body["files"]]
    assert names == ["a.png", "notes.txt"]
    txt = body["files"][1]
    assert txt["file_size"] == 12 and txt["extension"] == "txt"
    assert txt["file_path"].endswith("/notes.txt")

    form = aiohttp.FormData()
    form.add_field("file_path", txt["file_path"])
    form.add_field("filetype", "hash")
    form.add_field("output_format", "json")
    async with http.post(
        f"{base_url}/v1/convert", data=form, headers={"Authorization": f"Bearer {account.key}"}
    ) as resp:
        job = await resp.json()
    assert resp.status == 202, job
    assert job["status"] == "pending"
    assert job["status_url"].endswith(f"/v1/status/{job['job_id']}")
    status = await wait_for_status(http, base_url, account.key, job["job_id"])
    assert status["status"] == "finished", status
    async with http.get(status["download_url"]) as resp:  # signed: no key needed
        digests = await resp.json(content_type=None)
    assert json.dumps(digests).count(hashlib.sha256(b"hello world\n").hexdigest()) == 1


async def test_unknown_job_is_404(http: aiohttp.ClientSession, base_url: str, account: Account) -> None:
    for job_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        async with http.get(f"{base_url}/v1/status/{job_id}", headers={"X-API-Key": account.key}) as resp:
            body = await resp.json()
        assert resp.status == 404
        assert set(body) >= {"error", "message", "hint"}


async def test_download_before_finished_is_409(
    http: aiohttp.ClientSession, base_url: str, account: Account, rt: Any
) -> None:
    # a job row that no worker has taken: its output cannot be ready
    row = await rt.pool.fetchrow(
        "INSERT INTO jobs (account_id, filetype, input_format, output_format, input_uploads)"
        " VALUES ((SELECT account_id FROM api_keys WHERE id = $1), 'image', 'png', 'jpg', '{}')"
        " RETURNING id",
        account.key_id,
    )
    async with http.get(f"{base_url}/v1/download/{row['id']}", headers={"X-API-Key": account.key}) as resp:
        body = await resp.json()
    assert resp.status == 409
    assert body["error"] == "Conflict" and "pending" in body["message"] and body["hint"]


async def test_unsupported_pair_is_400_with_hint(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    form = aiohttp.FormData()
    form.add_field("file", png_bytes(), filename="a.png")
    form.add_field("filetype", "image")
    form.add_field("output_format", "mp3")
    async with http.post(f"{base_url}/v1/convert", data=form, headers={"X-API-Key": account.key}) as resp:
        body = await resp.json()
    assert resp.status == 400
    assert "mp3" in body["message"]
    assert "webp" in body["hint"] and "jpg" in body["hint"]


async def test_invalid_option_is_400_naming_it(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    for options, needle in (
        ('{"quality": 500}', "quality"),
        ('{"colour": 1}', "colour"),
        ("{not json", "JSON"),
    ):
        form = aiohttp.FormData()
        form.add_field("file", png_bytes(), filename="a.png")
        form.add_field("filetype", "image")
        form.add_field("output_format", "jpg")
        form.add_field("options", options)
        async with http.post(f"{base_url}/v1/convert", data=form, headers={"X-API-Key": account.key}) as resp:
            body = await resp.json()
        assert resp.status == 400, body
        assert needle in body["message"] and body["hint"]


async def test_a_json_body_that_is_not_an_object_is_400_with_a_hint(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    async with http.post(f"{base_url}/v1/convert", json=[1], headers={"X-API-Key": account.key}) as resp:
        body = await resp.json()
    assert resp.status == 400 and "JSON object" in body["message"] and "output_format" in body["hint"]


async def test_wrong_method_and_unknown_route_say_what_exists(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    async with http.get(f"{base_url}/v1/convert", headers={"X-API-Key": account.key}) as resp:
        body = await resp.json()
    assert (resp.status, body["error_code"]) == (405, "METHOD_NOT_ALLOWED")
    assert body["message"] == "GET is not allowed on /v1/convert." and "POST" in body["hint"]
    assert resp.headers["Allow"] == "POST"
    async with http.get(f"{base_url}/v1/nothing", headers={"X-API-Key": account.key}) as resp:
        body = await resp.json()
    assert (resp.status, body["error_code"]) == (404, "NOT_FOUND")
    assert "/v1/nothing" in body["message"] and "GET /v1/" in body["hint"]
    async with http.get(f"{base_url}/api/v1/convert") as resp:  # a path outside every API
        body = await resp.json()
    assert (resp.status, body["error_code"]) == (404, "NOT_FOUND") and "/v1/" in body["hint"]


def _silence_wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 8000)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "filetype", "output_format", "options", "field"),
    [
        ("a.png", png_bytes(), "image", "jpg", '{"background": "notacolour"}', "background"),
        ("a.md", b"# hi", "document", "pdf", '{"pages": "z-q"}', "pages"),
        ("a.md", b"# hi", "ebook", "pdf", '{"pages": "1-2-3"}', "pages"),
        ("a.pdf", b"%PDF-1.4", "pdf", "png", '{"pages": "first"}', "pages"),
        ("a.wav", _silence_wav(), "audio", "mp3", '{"start": 2, "end": 1}', "end"),
    ],
)
async def test_an_option_value_the_schema_cannot_describe_is_400_before_a_job(
    http: aiohttp.ClientSession,
    base_url: str,
    account: Account,
    name: str,
    data: bytes,
    filetype: str,
    output_format: str,
    options: str,
    field: str,
) -> None:
    """A colour, a page range or a trim's end before its start is beyond the schema: a bad
    one was a 202 and a job that failed a moment later; it is a 400 naming the option, like
    every other bad option."""
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name)
    form.add_field("filetype", filetype)
    form.add_field("output_format", output_format)
    form.add_field("options", options)
    async with http.post(f"{base_url}/v1/convert", data=form, headers={"X-API-Key": account.key}) as resp:
        body = await resp.json()
    assert resp.status == 400, body
    assert (body["error_code"], body["field"]) == ("INVALID_OPTION", field) and body["hint"]


async def test_oversized_upload_is_413(
    http: aiohttp.ClientSession, base_url: str, account: Account, settings: Any
) -> None:
    big = b"\0" * (settings.max_upload_bytes + 1)
    form = aiohttp.FormData()
    form.add_field("file", big, filename="big.bin")
    async with http.post(f"{base_url}/v1/upload", data=form, headers={"X-API-Key": account.key}) as resp:
        body = await resp.json()
    assert resp.status == 413
    assert "limit" in body["message"] and body["hint"]


async def test_missing_and_wrong_keys_are_401(http: aiohttp.ClientSession, base_url: str) -> None:
    for headers, params in (
        ({}, {}),
        ({"X-API-Key": "sk_live_nope"}, {}),
        ({"Authorization": "Bearer sk_live_nope"}, {}),
        ({}, {"api_key": "sk_live_nope"}),
    ):
        async with http.get(f"{base_url}/v1/keys/me", headers=headers, params=params) as resp:
            body = await resp.json()
        assert resp.status == 401
        assert body["error"] == "Unauthorized" and body["hint"]


async def test_key_accepted_in_all_three_places(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    for headers, params in (
        ({"X-API-Key": account.key}, {}),
        ({"Authorization": f"Bearer {account.key}"}, {}),
        ({}, {"api_key": account.key}),
    ):
        async with http.get(f"{base_url}/v1/keys/me", headers=headers, params=params) as resp:
            body = await resp.json()
        assert resp.status == 200
        assert body["key_id"] == account.key_id and body["name"] == account.name
    assert body["usage_count"] >= 3 and body["last_used_at"]


async def test_tampered_or_expired_download_links_are_refused(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    job_id = await queue_tiny_job(http, base_url, account.key)
    status = await wait_for_status(http, base_url, account.key, job_id)
    url = status["download_url"]
    async with http.get(url) as resp:
        assert resp.status == 200
        assert "attachment" in resp.headers["Content-Disposition"]
    tampered = url[:-1] + ("0" if url[-1] != "0" else "1")
    expired = url.replace("expires=", "expires=1")  # 1 followed by digits: far in the past? no
    expired = url.split("?")[0] + "?expires=1000&signature=" + url.split("signature=")[1]
    for bad in (tampered, expired):
        async with http.get(bad) as resp:
            body = await resp.json()
        assert resp.status == 403 and body["hint"]


async def test_content_that_is_not_the_declared_type_is_refused_naming_it(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG")
    form = aiohttp.FormData()
    form.add_field("file", buf.getvalue(), filename="really-a-jpeg.png")
    form.add_field("filetype", "image")
    form.add_field("output_format", "webp")
    async with http.post(f"{base_url}/v1/convert", data=form, headers={"X-API-Key": account.key}) as resp:
        body = await resp.json()
    assert resp.status == 400
    assert "jpg" in body["message"] and body["hint"]


async def test_what_an_archive_loses_is_told_with_the_finished_job(
    http: aiohttp.ClientSession, base_url: str, gql: GraphQL, account: Account
) -> None:
    """Links inside an archive are left out (they could point anywhere); the job says so."""
    link = zipfile.ZipInfo("passwd")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("notes.txt", b"kept")
        zf.writestr(link, b"/etc/passwd")
    form = aiohttp.FormData()
    form.add_field("file", buf.getvalue(), filename="mixed.zip")
    form.add_field("filetype", "archive")
    form.add_field("output_format", "tar")
    async with http.post(f"{base_url}/v1/convert", data=form, headers={"X-API-Key": account.key}) as r:
        assert r.status == 202, await r.text()
        job_id = (await r.json())["job_id"]
    status = await wait_for_status(http, base_url, account.key, job_id)
    assert status["status"] == "finished" and status["items"] == ["notes.txt"], status
    assert status["notes"] == ["passwd: symbolic link, not copied"]
    answer = await gql("query($id: ID!) { job(id: $id) { outputNotes } }", {"id": job_id}, key=account.key)
    assert answer["data"]["job"]["outputNotes"] == status["notes"]
    # a job that lost nothing says nothing
    form = aiohttp.FormData()
    form.add_field("file", b"plain", filename="a.txt")
    form.add_field("filetype", "archive")
    form.add_field("output_format", "zip")
    async with http.post(f"{base_url}/v1/convert", data=form, headers={"X-API-Key": account.key}) as r:
        plain = await wait_for_status(http, base_url, account.key, (await r.json())["job_id"])
    assert plain["status"] == "finished" and "notes" not in plain, plain

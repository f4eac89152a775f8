"""Upload, convert, watch live, download: the GraphQL path end to end."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from typing import Any

import aiohttp
import pytest
from PIL import Image

from app.runtime import Runtime
from tests.conftest import Account, GraphQL, operation, png_bytes, wait_for_status
from tests.helpers import queue_tiny_job
from tests.wsclient import connect, subscribe


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_upload_convert_subscribe_download(
    gql: GraphQL, http: aiohttp.ClientSession, base_url: str, account: Account, protocol: str
) -> None:
    status, body = await gql.multipart(
        operation("Upload"),
        {"files": [None]},
        {"variables.files.0": ("photo.png", png_bytes((120, 90), "green"))},
        key=account.key,
    )
    assert status == 200, body
    uploaded = body["data"]["upload"][0]
    assert uploaded["fileName"] == "photo.png" and uploaded["extension"] == "png"

    sub, ack = await connect(http, base_url, protocol=protocol, payload={"apiKey": account.key})
    assert ack["type"] == "connection_ack"
    body = await gql(
        operation("Convert"),
        {
            "input": {
                "filePath": uploaded["filePath"],
                "filetype": "image",
                "outputFormat": "jpg",
                "options": {"quality": 70, "width": 60},
            }
        },
        key=account.key,
    )
    job = body["data"]["convert"]
    assert job["status"] == "PENDING" and job["outputFormat"] == "jpg"

    await subscribe(sub, operation("JobUpdates"), {"jobId": job["id"]})
    updates = [p["data"]["jobUpdates"] for p in await sub.results()]
    statuses = [u["status"] for u in updates]
    assert statuses[-1] == "FINISHED", updates
    assert "PROCESSING" in statuses
    assert statuses.index("PROCESSING") < statuses.index("FINISHED")
    final = updates[-1]
    assert final["progress"] == 1 and final["outputName"] == "photo.jpg"
    await sub.ws.close()

    async with http.get(final["downloadUrl"]) as resp:
        data = await resp.read()
    assert resp.status == 200 and len(data) == final["outputSize"]
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "JPEG" and img.size == (60, 45)
        r, g, b = img.getpixel((30, 20))
        assert g > 100 and r < 60 and b < 60


async def test_convert_with_upload_in_the_same_request(
    gql: GraphQL, http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    status, body = await gql.multipart(
        operation("Convert"),
        {"input": {"file": None, "filetype": "hash", "outputFormat": "json"}},
        {"variables.input.file": ("data.bin", b"\x00\x01convertd")},
        key=account.key,
    )
    assert status == 200, body
    job_id = body["data"]["convert"]["id"]
    sub, _ = await connect(http, base_url, payload={"Authorization": f"Bearer {account.key}"})
    await subscribe(sub, operation("JobUpdates"), {"jobId": job_id})
    final = (await sub.results())[-1]["data"]["jobUpdates"]
    assert final["status"] == "FINISHED"
    async with http.get(final["downloadUrl"]) as resp:
        text = await resp.text()
    assert hashlib.sha512(b"\x00\x01convertd").hexdigest() in text
    json.loads(text)


async def test_subscription_to_a_finished_job_yields_it_and_completes(
    gql: GraphQL, http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    _status, body = await gql.multipart(
        operation("Convert"),
        {"input": {"file": None, "filetype": "hash", "outputFormat": "txt"}},
        {"variables.input.file": ("a.txt", b"abc")},
        key=account.key,
    )
    job_id = body["data"]["convert"]["id"]
    sub, _ = await connect(http, base_url, payload={"apiKey": account.key})
    await subscribe(sub, operation("JobUpdates"), {"jobId": job_id})
    await sub.results()
    # the job is finished now: a new subscriber gets the snapshot, then completion
    await subscribe(sub, operation("JobUpdates"), {"jobId": job_id}, op_id="2")
    updates = await sub.results()
    assert [u["data"]["jobUpdates"]["status"] for u in updates] == ["FINISHED"]


async def test_jobs_newest_first_and_paginated(gql: GraphQL, make_account: Any) -> None:
    acc = await make_account("pager")
    ids = []
    for i in range(3):
        _, body = await gql.multipart(
            operation("Convert"),
            {"input": {"file": None, "filetype": "hash", "outputFormat": "txt"}},
            {"variables.input.file": (f"f{i}.txt", b"x")},
            key=acc.key,
        )
        ids.append(body["data"]["convert"]["id"])
    first = (await gql(operation("Jobs"), {"first": 2}, key=acc.key))["data"]["jobs"]
    assert [n["id"] for n in first["nodes"]] == ids[::-1][:2]
    rest = (await gql(operation("Jobs"), {"first": 2, "after": first["nextCursor"]}, key=acc.key))["data"][
        "jobs"
    ]
    assert [n["id"] for n in rest["nodes"]] == [ids[0]] and rest["nextCursor"] is None


async def test_formats_and_options_schema(gql: GraphQL, account: Account) -> None:
    formats = (await gql(operation("Formats"), key=account.key))["data"]["formats"]
    image = next(f for f in formats if f["filetype"] == "image")
    png = next(c for c in image["conversions"] if c["inputFormat"] == "png")
    assert {"jpg", "webp", "ico"} <= set(png["outputFormats"])
    jpg = next(o for o in png["options"] if o["outputFormat"] == "jpg")
    assert jpg["schema"]["properties"]["quality"]["maximum"] == 100
    schema = (
        await gql(
            operation("FormatOptions"),
            {"filetype": "image", "inputFormat": "png", "outputFormat": "jpg"},
            key=account.key,
        )
    )["data"]["formatOptions"]
    assert schema["properties"]["quality"]["type"] == "integer"


async def test_me_describes_the_calling_key(gql: GraphQL, account: Account) -> None:
    me = (await gql(operation("Me"), key=account.key))["data"]["me"]
    assert me["id"] == account.key_id and me["kid"] == account.kid
    assert me["restrictionType"] == "all" and me["environment"] == "live"
    assert me["prefix"].startswith("sk_live_") and account.key.startswith(me["prefix"])
    assert me["usageCount"] >= 1


async def test_unsupported_pair_is_refused_before_a_job_exists(
    gql: GraphQL, account: Account, rt: Any
) -> None:
    before = await rt.pool.fetchval("SELECT count(*) FROM jobs")
    _, body = await gql.multipart(
        operation("Convert"),
        {"input": {"file": None, "filetype": "image", "outputFormat": "docx"}},
        {"variables.input.file": ("a.png", png_bytes())},
        key=account.key,
    )
    err = body["errors"][0]
    assert err["extensions"]["code"] == "UNSUPPORTED_CONVERSION"
    assert err["extensions"]["status"] == 400 and "webp" in err["extensions"]["hint"]
    assert await rt.pool.fetchval("SELECT count(*) FROM jobs") == before


async def test_errors_name_the_field_as_the_schema_spells_it(gql: GraphQL, account: Account) -> None:
    body = await gql(
        operation("Convert"),
        {"input": {"filePath": "uploads/nope.png", "filetype": "image", "outputFormat": "jpg"}},
        key=account.key,
    )
    assert body["errors"][0]["extensions"]["field"] == "filePath", body
    body = await gql(operation("CreateJwt"), {"kid": account.kid, "expiresInSec": 0}, key=account.key)
    assert body["errors"][0]["extensions"]["field"] == "expiresInSec", body


async def test_progress_is_the_stored_fraction_without_single_precision_noise(
    gql: GraphQL, http: aiohttp.ClientSession, base_url: str, account: Account, rt: Runtime
) -> None:
    """PostgreSQL keeps progress as a 4-byte real: read back as a double, 0.4 became
    0.4000000059604645 in every GraphQL answer and subscription update."""
    job_id = await queue_tiny_job(http, base_url, account.key)
    await wait_for_status(http, base_url, account.key, job_id)
    await rt.pool.execute("UPDATE jobs SET progress = 0.4 WHERE id = $1", uuid.UUID(job_id))
    body = await gql(operation("Job"), {"id": job_id}, key=account.key)
    assert body["data"]["job"]["progress"] == 0.4

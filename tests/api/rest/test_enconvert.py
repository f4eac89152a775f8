"""Enconvert's private-keys document, literally: `POST /v1/convert/json-to-xml` with X-API-Key
and `-F file=@data.json` converts in one call and answers its JSON shape."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import aiohttp

from tests.conftest import Account


def _form(name: str, data: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name)
    return form


async def test_the_documents_json_to_xml_example(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    data = json.dumps({"name": "convertd", "tags": ["a", "b"]}).encode()
    headers = {"X-API-Key": account.key}
    async with http.post(
        f"{base_url}/v1/convert/json-to-xml", data=_form("data.json", data), headers=headers
    ) as r:
        body = await r.json()
        assert r.status == 200, body
    assert body["filename"] == "data.xml" and body["object_key"].endswith("/data.xml")
    assert isinstance(body["conversion_time_seconds"], float) and body["conversion_time_seconds"] >= 0
    # the presigned URL needs no key, and is the converted file
    async with aiohttp.ClientSession() as anonymous, anonymous.get(body["presigned_url"]) as r:
        assert r.status == 200
        xml = await r.read()
    assert len(xml) == body["file_size"]
    assert ET.fromstring(xml).find(".//name") is not None


async def test_unknown_pairs_bad_files_and_keys_say_why(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    headers = {"X-API-Key": account.key}
    async with http.post(
        f"{base_url}/v1/convert/json-to-mp3", data=_form("d.json", b"{}"), headers=headers
    ) as r:
        body = await r.json()
        assert (r.status, body["error_code"]) == (400, "UNSUPPORTED_CONVERSION") and "xml" in body["hint"]
    async with http.post(f"{base_url}/v1/convert/jsonxml", data=_form("d.json", b"{}"), headers=headers) as r:
        body = await r.json()
        assert r.status == 404 and "json-to-xml" in body["hint"]
    async with http.post(
        f"{base_url}/v1/convert/json-to-xml", data=_form("d.json", b"{nope"), headers=headers
    ) as r:
        body = await r.json()
        assert (r.status, body["error_code"]) == (422, "CONVERSION_FAILED") and body["hint"]
    async with http.post(
        f"{base_url}/v1/convert/json-to-xml", data=_form("d.json", b"{}"), headers={"X-API-Key": "sk_nope"}
    ) as r:
        assert (r.status, (await r.json())["code"]) == (401, 4010)


async def test_a_key_limited_to_one_conversion_as_the_document_configures_it(
    http: aiohttp.ClientSession, base_url: str, make_account: Any
) -> None:
    """`"allowed_endpoints": ["/v1/convert/json-to-xml", ...]`: that conversion, nothing else."""
    acct: Account = await make_account("one pair", allowed_endpoints=["/v1/convert/json-to-xml"])
    headers = {"X-API-Key": acct.key}
    async with http.post(
        f"{base_url}/v1/convert/json-to-xml", data=_form("d.json", b"{}"), headers=headers
    ) as r:
        assert r.status == 200, await r.text()
    async with http.post(
        f"{base_url}/v1/convert/json-to-yaml", data=_form("d.json", b"{}"), headers=headers
    ) as r:
        body = await r.json()
        assert r.status == 403 and "/v1/convert/json-to-xml" in body["hint"]
    async with http.get(f"{base_url}/v1/formats", headers=headers) as r:
        assert r.status == 403

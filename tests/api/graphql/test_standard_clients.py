"""The README's GraphQL example, run with the standard `gql` client over HTTP and websockets."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from gql import Client, FileVar, gql
from gql.transport.aiohttp import AIOHTTPTransport
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport
from PIL import Image

from tests.conftest import Account, png_bytes


@pytest.mark.parametrize("subprotocol", ["graphql-transport-ws", "graphql-ws"])
async def test_readme_graphql_example(
    base_url: str, account: Account, tmp_path: Path, subprotocol: str
) -> None:
    KEY, URL = account.key, f"{base_url}/graphql"
    (tmp_path / "photo.png").write_bytes(png_bytes((50, 40), "white"))

    http = AIOHTTPTransport(url=URL, headers={"X-API-Key": KEY})
    async with Client(transport=http) as session:
        with open(tmp_path / "photo.png", "rb") as f:
            upload = gql("mutation($f: [Upload!]!) { upload(files: $f) { filePath } }")
            upload.variable_values = {"f": [FileVar(f)]}
            uploaded = await session.execute(upload, upload_files=True)
        convert = gql("""mutation($input: ConvertInput!) { convert(input: $input) { id } }""")
        convert.variable_values = {
            "input": {
                "filePath": uploaded["upload"][0]["filePath"],
                "filetype": "image",
                "outputFormat": "webp",
                "options": {"quality": 80},
            }
        }
        job = (await session.execute(convert))["convert"]

    ws = WebsocketsTransport(
        url=URL.replace("http", "ws"), init_payload={"apiKey": KEY}, subprotocols=[subprotocol]
    )
    seen = []
    async with Client(transport=ws) as session:
        updates = gql("""subscription($id: ID!) {
            jobUpdates(jobId: $id) { status progress error downloadUrl } }""")
        updates.variable_values = {"id": job["id"]}
        async for update in session.subscribe(updates):
            seen.append(update["jobUpdates"])
    assert seen[-1]["status"] == "FINISHED" and seen[-1]["progress"] == 1

    import aiohttp

    async with aiohttp.ClientSession() as h, h.get(seen[-1]["downloadUrl"]) as resp:
        data = await resp.read()
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "WEBP" and img.size == (50, 40)


async def test_standard_client_sees_error_codes(base_url: str) -> None:
    http = AIOHTTPTransport(url=f"{base_url}/graphql", headers={"X-API-Key": "sk_live_bogus"})
    async with Client(transport=http) as session:
        with pytest.raises(TransportQueryError) as info:
            await session.execute(gql("{ me { id } }"))
    assert info.value.errors[0]["extensions"]["code"] == "UNAUTHENTICATED"

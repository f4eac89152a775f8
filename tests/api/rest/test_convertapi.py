"""ConvertAPI compatibility: the official `convertapi` package (MIT) against a live Convertd.

The SDK is synchronous and keeps its settings in module globals, so each call runs in a
thread (the server shares this test's event loop) with base_uri and credentials set there.
"""

from __future__ import annotations

import asyncio
import base64
import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import convertapi
import pypdfium2
import pytest
from PIL import Image

from tests.conftest import png_bytes


def _sdk(base_url: str, credentials: str, call: Callable[[], Any]) -> Any:
    convertapi.base_uri = f"{base_url}/convertapi/"
    convertapi.api_credentials = credentials
    return call()


async def sdk(base_url: str, credentials: str, call: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(_sdk, base_url, credentials, call)


def write_png(folder: Path, name: str, size: tuple[int, int] = (64, 48), color: str = "red") -> Path:
    path = folder / name
    path.write_bytes(png_bytes(size, color))
    return path


async def test_png_to_webp_with_the_official_sdk(base_url: str, account: Any, tmp_path: Path) -> None:
    src = write_png(tmp_path, "photo.png")
    out = tmp_path / "out"
    out.mkdir()

    def run() -> tuple[Any, list[str]]:
        result = convertapi.convert("webp", {"File": str(src)}, from_format="png")
        return result, result.save_files(str(out))

    result, saved = await sdk(base_url, account.key, run)
    assert result.conversion_cost == 1
    assert [Path(p).name for p in saved] == ["photo.webp"]
    with Image.open(saved[0]) as img:
        assert (img.format, img.size) == ("WEBP", (64, 48))
    info = result.response["Files"][0]
    assert info["FileExt"] == "webp" and info["FileSize"] == Path(saved[0]).stat().st_size


async def test_options_by_their_convertapi_names(base_url: str, account: Any, tmp_path: Path) -> None:
    """Width and Quality reach the converter's width and quality (case-insensitive names)."""
    src = write_png(tmp_path, "wide.png", (200, 100))

    def run() -> list[str]:
        return convertapi.convert("webp", {"File": str(src), "Width": 50, "Quality": 60}).save_files(
            str(tmp_path)
        )

    [saved] = await sdk(base_url, account.key, run)
    with Image.open(saved) as img:
        assert img.size == (50, 25)


async def test_several_files_one_job_each(base_url: str, account: Any, tmp_path: Path) -> None:
    files = [str(write_png(tmp_path, f"p{i}.png", color=c)) for i, c in enumerate(["red", "blue", "green"])]
    out = tmp_path / "out"
    out.mkdir()

    def run() -> tuple[Any, list[str]]:
        result = convertapi.convert("webp", {"Files": files}, from_format="png")
        return result, result.save_files(str(out))

    result, saved = await sdk(base_url, account.key, run)
    assert result.conversion_cost == 3
    assert sorted(Path(p).name for p in saved) == ["p0.webp", "p1.webp", "p2.webp"]
    colours = []
    for path in sorted(saved):
        with Image.open(path) as img:
            colours.append(img.convert("RGB").getpixel((5, 5)))
    assert colours[0][0] > 200 and colours[1][2] > 200 and colours[2][1] > 100


async def test_several_images_into_one_pdf(base_url: str, account: Any, tmp_path: Path) -> None:
    """A converter that reads several inputs together makes one file of them (one conversion)."""
    files = [str(write_png(tmp_path, f"page{i}.png")) for i in range(2)]

    def run() -> tuple[Any, list[str]]:
        result = convertapi.convert("pdf", {"Files": files}, from_format="png")
        return result, result.save_files(str(tmp_path))

    result, [saved] = await sdk(base_url, account.key, run)
    assert result.conversion_cost == 1
    assert len(pypdfium2.PdfDocument(saved)) == 2


async def test_files_into_one_zip_from_any(base_url: str, account: Any, tmp_path: Path) -> None:
    """The SDK converts to zip "from any": each file's own extension says its format."""
    png = write_png(tmp_path, "a.png")
    txt = tmp_path / "b.csv"
    txt.write_text("x,y\n1,2\n")

    def run() -> tuple[Any, list[str]]:
        result = convertapi.convert("zip", {"Files": [str(png), str(txt)]})
        return result, result.save_files(str(tmp_path))

    result, [saved] = await sdk(base_url, account.key, run)
    assert result.conversion_cost == 1
    with zipfile.ZipFile(saved) as archive:
        assert sorted(archive.namelist()) == ["a.png", "b.csv"]


async def test_a_result_passed_on_to_the_next_conversion(base_url: str, account: Any, tmp_path: Path) -> None:
    """The SDKs chain conversions by passing a result as File: its Url, imported like any URL."""
    src = write_png(tmp_path, "chain.png", (30, 20))

    def run() -> list[str]:
        first = convertapi.convert("webp", {"File": str(src)})
        return convertapi.convert("jpg", {"File": first}).save_files(str(tmp_path))

    [saved] = await sdk(base_url, account.key, run)
    with Image.open(saved) as img:
        assert (img.format, img.size) == ("JPEG", (30, 20))


async def test_a_result_file_id_as_the_next_input(
    base_url: str, account: Any, http: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": f"Bearer {account.key}"}
    file_id = (await upload(http, base_url, account.key, "r.png", png_bytes((12, 8))))["FileId"]
    async with http.post(
        f"{base_url}/convertapi/convert/png/to/webp",
        data={"File": file_id, "StoreFile": "true"},
        headers=headers,
    ) as r:
        result_id = (await r.json())["Files"][0]["FileId"]
    async with http.post(
        f"{base_url}/convertapi/convert/webp/to/png", data={"File": result_id}, headers=headers
    ) as r:
        assert r.status == 200, await r.text()
        [entry] = (await r.json())["Files"]
    with Image.open(io.BytesIO(base64.b64decode(entry["FileData"]))) as img:
        assert (img.format, img.size) == ("PNG", (12, 8))


async def test_bad_key_is_convertapi_error_4010(base_url: str) -> None:
    with pytest.raises(convertapi.ApiError) as caught:
        await sdk(base_url, "not-a-key", lambda: convertapi.user())
    assert caught.value.code == 4010
    assert "not valid" in caught.value.message


async def test_user_with_a_jwt(base_url: str, account: Any, http: aiohttp.ClientSession) -> None:
    body = {"Kid": account.kid, "ExpiresInSec": 600}
    async with http.post(f"{base_url}/v1/token/jwt", json=body, headers={"X-API-Key": account.key}) as r:
        token = (await r.json())["token"]
    user = await sdk(base_url, token, lambda: convertapi.user())
    assert user["Id"] == account.account_id and user["Active"] is True
    assert user["ConversionsConsumed"] == 0


async def test_the_v2_documents_jwt_request_at_the_convertapi_base(
    base_url: str, account: Any, http: aiohttp.ClientSession
) -> None:
    """The document's `POST https://v2.convertapi.com/token/jwt`, with base_uri /convertapi/."""
    body = {"Kid": account.kid, "ExpiresInSec": 3600, "ClientIp": "localhost,197.0.0.1"}
    headers = {"Authorization": f"Bearer {account.key}"}
    async with http.post(f"{base_url}/convertapi/token/jwt", json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        token = (await r.json())["token"]
    user = await sdk(base_url, token, lambda: convertapi.user())
    assert user["Id"] == account.account_id
    async with http.post(f"{base_url}/convertapi/token/jwt", json=body) as r:
        assert r.status == 401 and (await r.json())["Code"] == 4013


async def test_a_keys_endpoint_list_applies(
    base_url: str, make_account: Callable[..., Any], tmp_path: Path
) -> None:
    """A key limited to conversions may convert here too, and not read the account."""
    acct = await make_account(allowed_endpoints=["/v1/convert", "/v1/upload"])
    src = write_png(tmp_path, "ok.png")
    result = await sdk(base_url, acct.key, lambda: convertapi.convert("webp", {"File": str(src)}))
    assert result.conversion_cost == 1
    with pytest.raises(convertapi.ApiError) as caught:
        await sdk(base_url, acct.key, lambda: convertapi.user())
    assert caught.value.code == 4030 and "may not call 'key info'" in caught.value.message


async def test_conversion_quota_is_the_same(
    base_url: str, make_account: Callable[..., Any], make_plan: Callable[..., Any], tmp_path: Path
) -> None:
    acct = await make_account(plan=await make_plan(conversions=1))
    src = write_png(tmp_path, "a.png")
    await sdk(base_url, acct.key, lambda: convertapi.convert("webp", {"File": str(src)}))
    with pytest.raises(convertapi.ApiError) as caught:
        await sdk(base_url, acct.key, lambda: convertapi.convert("webp", {"File": str(src)}))
    assert caught.value.code == 4030 and "No conversions remaining" in caught.value.message


async def test_failed_conversion_is_an_api_error(base_url: str, account: Any, tmp_path: Path) -> None:
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"this is not a png at all")
    with pytest.raises(convertapi.ApiError) as caught:
        await sdk(base_url, account.key, lambda: convertapi.convert("webp", {"File": str(fake)}))
    assert caught.value.code == 4000
    assert caught.value.invalid_parameters == {"file": [caught.value.message]}


# --- the wire protocol, for what the Python SDK never sends -----------------------------------


async def upload(http: aiohttp.ClientSession, base_url: str, key: str, name: str, data: bytes) -> Any:
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Disposition": "attachment; filename*=UTF-8''" + aiohttp.helpers.quote(name),
    }
    async with http.post(f"{base_url}/convertapi/upload", data=data, headers=headers) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_upload_keeps_a_unicode_name(base_url: str, account: Any, http: aiohttp.ClientSession) -> None:
    body = await upload(http, base_url, account.key, "café photo.png", png_bytes())
    assert body["FileName"] == "café photo.png" and body["FileExt"] == "png"
    assert body["FileId"]


async def test_store_file_false_answers_the_bytes(
    base_url: str, account: Any, http: aiohttp.ClientSession
) -> None:
    file_id = (await upload(http, base_url, account.key, "x.png", png_bytes()))["FileId"]
    async with http.post(
        f"{base_url}/convertapi/convert/png/to/jpg",
        data={"File": file_id, "StoreFile": "false"},
        headers={"Authorization": f"Bearer {account.key}"},
    ) as r:
        assert r.status == 200, await r.text()
        [entry] = (await r.json())["Files"]
    assert "Url" not in entry
    with Image.open(io.BytesIO(base64.b64decode(entry["FileData"]))) as img:
        assert img.format == "JPEG"
    # nothing was kept
    async with http.get(f"{base_url}/v1/status/{entry['FileId']}", headers={"X-API-Key": account.key}) as r:
        assert r.status == 404


async def test_file_part_and_json_parameters(
    base_url: str, account: Any, http: aiohttp.ClientSession
) -> None:
    form = aiohttp.FormData()
    form.add_field("File", png_bytes(), filename="part.png", content_type="image/png")
    form.add_field("StoreFile", "true")
    headers = {"Authorization": f"Bearer {account.key}"}
    async with http.post(f"{base_url}/convertapi/convert/png/to/webp", data=form, headers=headers) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["Files"][0]["FileName"] == "part.webp"

    file_id = (await upload(http, base_url, account.key, "j.png", png_bytes()))["FileId"]
    body = {
        "Parameters": [
            {"Name": "File", "FileValue": {"Id": file_id}},
            {"Name": "StoreFile", "Value": True},
            {"Name": "FileName", "Value": "renamed"},
        ]
    }
    async with http.post(f"{base_url}/convertapi/convert/png/to/gif", json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["Files"][0]["FileName"] == "renamed.gif"

    data = base64.b64encode(png_bytes()).decode()
    inline = {
        "Parameters": [
            {
                "Name": "Files",
                "FileValues": [{"Name": "in0.png", "Data": data}, {"Name": "in1.png", "Data": data}],
            },
            {"Name": "StoreFile", "Value": True},
        ]
    }
    async with http.post(f"{base_url}/convertapi/convert/png/to/webp", json=inline, headers=headers) as r:
        assert r.status == 200, await r.text()
        assert [f["FileName"] for f in (await r.json())["Files"]] == ["in0.webp", "in1.webp"]


@pytest.mark.parametrize(
    ("path", "data", "status", "code", "field"),
    [
        ("/convertapi/convert/png/to/webp", {"File": "http://"}, 400, 4000, "url"),
        ("/convertapi/convert/png/to/webp", {"File": "0123456789ab"}, 404, 4040, "File"),
        ("/convertapi/convert/png/to/nope", {"File": "0123456789ab"}, 400, 4000, "output_format"),
        ("/convertapi/convert/png/to/webp", {"Timeout": "0"}, 400, 4000, "Timeout"),
        ("/convertapi/convert/png/to/webp", {}, 400, 4000, "File"),
        ("/convertapi/nowhere", {}, 404, 4040, None),
        ("/convertapi/convert/png/to/webp", {f"Files[{i}]": "x" for i in range(101)}, 400, 4000, "Files"),
    ],
)
async def test_errors_in_convertapi_shape(
    base_url: str,
    account: Any,
    http: aiohttp.ClientSession,
    path: str,
    data: dict[str, str],
    status: int,
    code: int,
    field: str | None,
) -> None:
    headers = {"Authorization": f"Bearer {account.key}"}
    async with http.post(f"{base_url}{path}", data=data, headers=headers) as r:
        body = await r.json()
    assert r.status == status, body
    assert body["Code"] == code and body["Message"] and "Hint" in body
    assert (list(body["InvalidParameters"]) if body["InvalidParameters"] else None) == (
        [field] if field else None
    )


async def test_no_credential_is_4013(base_url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{base_url}/convertapi/user") as r:
        assert r.status == 401
        assert (await r.json())["Code"] == 4013

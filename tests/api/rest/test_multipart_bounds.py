"""Multipart bodies are bounded: parts, fields, field size, request size; a malformed body
is a 400 with a hint, never a 500."""

from __future__ import annotations

import aiohttp

from tests.conftest import Account

BOUNDARY = "convertdboundary"


def _body(*parts: tuple[str, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


async def _post(http: aiohttp.ClientSession, base_url: str, key: str, body: bytes) -> tuple[int, dict]:
    headers = {"X-API-Key": key, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    async with http.post(f"{base_url}/v1/convert", data=body, headers=headers) as r:
        return r.status, await r.json()


COMMON = (("filetype", None, b"hash"), ("output_format", None, b"txt"))


async def test_a_text_field_over_64_kib_is_a_413(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    body = _body(("file", "a.txt", b"abc"), *COMMON, ("options", None, b"{" + b" " * 70_000 + b"}"))
    status, answer = await _post(http, base_url, account.key, body)
    assert status == 413 and "'options'" in answer["message"] and answer["hint"]


async def test_too_many_fields_or_files_are_refused(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    fields = [(f"f{i}", None, b"x" * 16_000) for i in range(200)]
    status, answer = await _post(http, base_url, account.key, _body(*COMMON, *fields))
    assert status == 413 and answer["hint"], answer
    files = [("file", f"{i}.txt", b"x") for i in range(101)]
    status, answer = await _post(http, base_url, account.key, _body(*COMMON, *files))
    assert status == 413 and "at most 100 files" in answer["message"]


async def test_a_nul_in_a_file_name_is_a_400_not_a_500(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    body = _body(("file", "safe.txt\0.php", b"abc"), *COMMON)
    status, answer = await _post(http, base_url, account.key, body)
    assert status == 400 and answer["hint"], answer


async def test_malformed_bodies_are_400s(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    broken = [
        b'--convertdboundary\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nabc',
        b"no boundary at all",
        b'--convertdboundary\r\nContent-Disposition: form-data; name="x"\r\n',
        b"--convertdboundary\r\n\r\n\r\n--convertdboundary--\r\n",
    ]
    for body in broken:
        status, answer = await _post(http, base_url, account.key, body)
        assert status == 400, (body, answer)
        assert answer["hint"]
    # the service goes on
    status, answer = await _post(http, base_url, account.key, _body(("file", "a.txt", b"abc"), *COMMON))
    assert status == 202


async def test_curl_with_the_seeds_own_content_type_header_is_read(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    # The ConvertAPI v1 document's token example passes
    # -H "Content-Type: multipart/form-data; boundary=WebAppBoundary" together with -F: curl
    # then appends its own boundary to that header and delimits the body with it.
    ours = "------------------------30ca0719b161b044"
    body = _body(("file", "document.txt", b"abc"), *COMMON).replace(BOUNDARY.encode(), ours.encode())
    headers = {
        "X-API-Key": account.key,
        "Content-Type": f"multipart/form-data; boundary=WebAppBoundary; boundary={ours}",
    }
    async with http.post(f"{base_url}/v1/convert", data=body, headers=headers) as r:
        assert r.status == 202, await r.text()

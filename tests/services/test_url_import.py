"""URL import: the input of a conversion fetched from an http(s) origin (a local aiohttp app
here, reachable because the test settings allow private URLs), and refused by default for
every non-public address."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import Account, GraphQL, operation, png_bytes, wait_for_status
from tests.helpers import start_local

PNG = png_bytes((40, 30), "blue")


class Origin:
    """A small origin server: files, redirect chains, a slow answer, an endless one."""

    def __init__(self) -> None:
        self.url = ""
        self.hits: list[str] = []
        self.release = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/photo.png", self.photo)
        app.router.add_get("/noext", self.photo)
        app.router.add_get("/named", self.named)
        app.router.add_get("/hop/{n}", self.hop)
        app.router.add_get("/endless", self.endless)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/to", self.to)
        app.router.add_get("/fake.png", self.fake)
        return app

    async def photo(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        return web.Response(body=PNG, content_type="image/png")

    async def named(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        return web.Response(
            body=PNG,
            headers={"Content-Disposition": 'attachment; filename="../../etc/holiday snap.png"'},
        )

    async def hop(self, request: web.Request) -> web.Response:
        """/hop/N redirects to /hop/N-1 ... and /hop/0 to the photo (a relative Location)."""
        self.hits.append(request.path)
        n = int(request.match_info["n"])
        raise web.HTTPFound("../photo.png" if n == 0 else f"/hop/{n - 1}")

    async def endless(self, request: web.Request) -> web.StreamResponse:
        """No Content-Length, and more bytes than any limit: only streaming can stop it."""
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = PNG + b"\0" * (64 * 1024)
        try:
            for _ in range(10_000):
                await response.write(chunk)
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            self.hits.append("endless cut")
        return response

    async def slow(self, request: web.Request) -> web.Response:
        await self.release.wait()  # until the test ends: the import must give up by itself
        return web.Response(body=PNG)

    async def fake(self, request: web.Request) -> web.Response:
        return web.Response(body=b"<!doctype html><html><body>not a picture</body></html>")

    async def to(self, request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(request.query["u"])


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    o = Origin()
    runner, o.url = await start_local(o.app())
    yield o
    o.release.set()
    await runner.cleanup()


async def _convert(
    http: aiohttp.ClientSession, base_url: str, key: str, url: str, **extra: Any
) -> tuple[int, dict[str, Any]]:
    body = {"filetype": "image", "output_format": "jpg", "url": url, **extra}
    async with http.post(f"{base_url}/v1/convert", json=body, headers={"X-API-Key": key}) as r:
        return r.status, await r.json()


async def _upload_name(rt: Any, job_id: str) -> str:
    return await rt.pool.fetchval(
        "SELECT u.file_name FROM jobs j JOIN uploads u ON u.id = j.input_uploads[1] WHERE j.id = $1::uuid",
        job_id,
    )


async def test_rest_json_url_converts_the_fetched_file(
    rt: Any, http: aiohttp.ClientSession, base_url: str, account: Account, origin: Origin
) -> None:
    status, body = await _convert(http, base_url, account.key, f"{origin.url}/photo.png")
    assert status == 202, body
    done = await wait_for_status(http, base_url, account.key, body["job_id"])
    assert done["status"] == "finished", done
    assert done["input_format"] == "png" and done["file_name"].endswith(".jpg")
    async with http.get(done["download_url"]) as r:
        assert (await r.read())[:3] == b"\xff\xd8\xff"
    assert await _upload_name(rt, body["job_id"]) == "photo.png"


async def test_rest_form_field_url(
    http: aiohttp.ClientSession, base_url: str, account: Account, origin: Origin
) -> None:
    form = aiohttp.FormData()
    form.add_field("filetype", "image")
    form.add_field("output_format", "webp")
    form.add_field("url", f"{origin.url}/photo.png")
    async with http.post(f"{base_url}/v1/convert", data=form, headers={"X-API-Key": account.key}) as r:
        body = await r.json()
        assert r.status == 202, body
    assert (await wait_for_status(http, base_url, account.key, body["job_id"]))["status"] == "finished"


async def test_graphql_convert_input_url(gql: GraphQL, account: Account, origin: Origin) -> None:
    result = await gql(
        operation("Convert"),
        {"input": {"filetype": "image", "outputFormat": "gif", "url": f"{origin.url}/hop/2", "wait": 30}},
        key=account.key,
    )
    assert "errors" not in result, result
    assert result["data"]["convert"]["status"] == "FINISHED", result
    assert origin.hits == ["/hop/2", "/hop/1", "/hop/0", "/photo.png"]


async def test_content_disposition_name_is_made_safe(
    rt: Any, http: aiohttp.ClientSession, base_url: str, account: Account, origin: Origin
) -> None:
    status, body = await _convert(http, base_url, account.key, f"{origin.url}/named")
    assert status == 202, body
    assert await _upload_name(rt, body["job_id"]) == "holiday snap.png"


async def test_a_name_without_extension_gets_the_sniffed_format(
    rt: Any, http: aiohttp.ClientSession, base_url: str, account: Account, origin: Origin
) -> None:
    status, body = await _convert(http, base_url, account.key, f"{origin.url}/noext?id=3")
    assert status == 202, body
    assert await _upload_name(rt, body["job_id"]) == "noext.png"


async def test_content_is_sniffed_like_an_upload(
    http: aiohttp.ClientSession, base_url: str, account: Account, origin: Origin
) -> None:
    status, body = await _convert(http, base_url, account.key, f"{origin.url}/fake.png")
    assert status == 400 and body["error_code"] == "INVALID_FILE", body
    assert "html" in body["message"].lower()


async def test_five_redirects_pass_six_are_refused(
    http: aiohttp.ClientSession, base_url: str, account: Account, origin: Origin
) -> None:
    status, body = await _convert(http, base_url, account.key, f"{origin.url}/hop/4")  # 5 redirects
    assert status == 202, body
    status, body = await _convert(http, base_url, account.key, f"{origin.url}/hop/5")  # 6
    assert status == 400 and body["field"] == "url", body
    assert "more than 5 redirects" in body["message"] and body["hint"]


async def test_origin_http_status_is_named(
    http: aiohttp.ClientSession, base_url: str, account: Account, origin: Origin
) -> None:
    status, body = await _convert(http, base_url, account.key, f"{origin.url}/missing.png")
    assert status == 400, body
    assert "HTTP 404" in body["message"] and body["error_code"] == "BAD_REQUEST" and body["hint"]


async def test_too_large_is_cut_while_streaming(
    make_server: Callable[..., Any], http: aiohttp.ClientSession, account: Account, origin: Origin
) -> None:
    small = await make_server(max_upload_bytes=200_000)
    status, body = await _convert(http, small, account.key, f"{origin.url}/endless")
    assert status == 400, body
    assert "larger than the 200,000 byte limit" in body["message"], body


async def test_slow_origin_times_out(
    make_server: Callable[..., Any], http: aiohttp.ClientSession, account: Account, origin: Origin
) -> None:
    impatient = await make_server(url_import_timeout=1.0)
    status, body = await _convert(http, impatient, account.key, f"{origin.url}/slow")
    assert status == 400, body
    assert "timed out" in body["message"] and body["hint"], body


async def test_an_origin_that_never_accepts_times_out_connecting(
    make_server: Callable[..., Any], http: aiohttp.ClientSession, account: Account
) -> None:
    # a listening socket whose one-place accept queue is full: the kernel drops the next SYN
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            impatient = await make_server(url_import_connect_timeout=0.5)
            status, body = await _convert(http, impatient, account.key, f"http://127.0.0.1:{port}/a.png")
    assert status == 400, body
    assert "connecting to 127.0.0.1 took over 0.5 s" in body["message"] and body["hint"], body


async def test_not_a_usable_url(http: aiohttp.ClientSession, base_url: str, account: Account) -> None:
    for url in ("ftp://example.com/a.png", "file:///etc/passwd", "http://", "nonsense"):
        status, body = await _convert(http, base_url, account.key, url)
        assert status == 400 and body["field"] == "url", (url, body)


@pytest.mark.parametrize(
    "target",
    ["127.0.0.1", "10.0.0.1", "169.254.169.254", "[::1]", "localhost"],
)
async def test_private_addresses_are_refused_by_default(
    target: str,
    make_server: Callable[..., Any],
    http: aiohttp.ClientSession,
    account: Account,
    origin: Origin,
) -> None:
    default = await make_server(allow_private_urls=False)
    port = origin.url.rsplit(":", 1)[1]
    status, body = await _convert(http, default, account.key, f"http://{target}:{port}/photo.png")
    assert status == 400, body
    assert "Refused to import" in body["message"] and "CONVERTD_ALLOW_PRIVATE_URLS" in body["hint"]
    assert origin.hits == []


async def test_every_redirect_target_is_resolved_and_checked_again(
    http: aiohttp.ClientSession, base_url: str, account: Account, origin: Origin
) -> None:
    """Each hop goes through the outbound check afresh (here the one refusal a server that
    allows private addresses still makes: a name that does not resolve). A redirect from a
    public origin to a private address is refused the same way, by the same check, but no
    public origin is reachable from the tests."""
    status, body = await _convert(
        http, base_url, account.key, f"{origin.url}/to?u=http://no-such-host.invalid/a.png"
    )
    assert status == 400 and "Refused to import from no-such-host.invalid" in body["message"], body
    assert "cannot resolve" in body["message"]
    status, body = await _convert(http, base_url, account.key, f"{origin.url}/to?u=file:///etc/passwd")
    assert status == 400 and "not a URL the service can import from" in body["message"], body

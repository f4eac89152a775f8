"""The conversion page at / and GraphiQL at /graphql in a real browser: Debian's chromium
driven by Playwright (its pip package; no browser is downloaded), against the live server."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jwt
import pytest
from PIL import Image

from tests.conftest import Account, png_bytes

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT = 60_000  # ms: a loaded two-core machine converts slowly

pytestmark = [
    pytest.mark.slow,  # a Chromium start per test
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="no /usr/bin/chromium: install Debian's chromium package (scripts/install.sh does)",
    ),
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A fresh page that records every URL it requests and every console error."""
    context = await browser.new_context(accept_downloads=True)
    tab = await context.new_page()
    tab.set_default_timeout(TIMEOUT)
    tab.requested = []
    tab.errors = []
    tab.on("request", lambda r: tab.requested.append(r.url))
    tab.on("websocket", lambda ws: tab.requested.append(ws.url))  # not a "request" to Playwright
    tab.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: tab.errors.append(str(e)))
    yield tab
    await context.close()


def token_for(account: Account, seconds: int = 600) -> str:
    claims = {"kid": account.kid, "exp": int(time.time()) + seconds}
    return jwt.encode(claims, account.signing_secret, algorithm="HS256")


async def sign_in(page: Any, credential: str) -> None:
    await page.fill("#credential", credential)
    await page.click("#connect")


async def drop_file(page: Any, name: str, data: bytes, mime: str) -> None:
    """What a drag from the desktop delivers: a drop event carrying the file."""
    transfer = await page.evaluate_handle(
        """([name, b64, mime]) => {
            const raw = atob(b64);
            const bytes = Uint8Array.from(raw, (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: mime }));
            return dt;
        }""",
        [name, base64.b64encode(data).decode(), mime],
    )
    await page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})


def only_local(requested: list[str], base_url: str) -> list[str]:
    """Every URL the page fetched that is not this server (data: URLs are inline)."""
    ws = base_url.replace("http://", "ws://")
    return [u for u in requested if not (u.startswith((base_url, ws, "data:")))]


async def test_drop_a_png_convert_to_webp_with_options_and_download_it(
    page: Any, base_url: str, account: Account, tmp_path: Path
) -> None:
    await page.goto(f"{base_url}/")
    await sign_in(page, token_for(account))
    await page.wait_for_selector("#convert:not([hidden])")
    assert "Accepted" in await page.inner_text("#access-message")
    await drop_file(page, "red.png", png_bytes((64, 48)), "image/png")
    await page.wait_for_selector("#file-list li")
    await page.select_option("#target", "webp")
    # the form generated from png->webp's schema
    width = page.locator("#opt-width")
    assert await width.get_attribute("type") == "number"
    assert (await width.get_attribute("min"), await width.get_attribute("max")) == ("1", "20000")
    assert await page.locator("#opt-fit").evaluate("e => e.tagName") == "SELECT"
    assert "cover" in await page.locator("#opt-fit").inner_text()
    assert await page.locator("#opt-strip_metadata").get_attribute("type") == "checkbox"
    await width.fill("32")
    await page.click("#start")
    row = page.locator('#jobs tr[data-file="red.png"]')
    await row.locator("text=finished").wait_for()
    assert (await row.locator("progress").get_attribute("value")) == "100"
    assert "100%" in await row.inner_text()
    async with page.expect_download() as info:
        await row.locator("a").click()
    download = await info.value
    assert download.suggested_filename == "red.webp"
    saved = tmp_path / "red.webp"
    await download.save_as(saved)
    with Image.open(io.BytesIO(saved.read_bytes())) as img:
        assert img.format == "WEBP" and img.size == (32, 24)
    assert only_local(page.requested, base_url) == []
    assert any(u.startswith(base_url.replace("http://", "ws://")) for u in page.requested)
    assert page.errors == []


async def test_a_list_option_is_a_multiple_select_and_its_choices_are_sent(
    page: Any, base_url: str, account: Account, tmp_path: Path
) -> None:
    await page.goto(f"{base_url}/")
    await sign_in(page, token_for(account))
    await page.wait_for_selector("#convert:not([hidden])")
    await drop_file(page, "data.bin", b"hello", "application/octet-stream")
    await page.wait_for_selector("#file-list li")
    await page.select_option("#target", "json")
    algorithms = page.locator("#opt-algorithms")
    assert await algorithms.evaluate("e => e.tagName + ':' + e.multiple") == "SELECT:true"
    await page.select_option("#opt-algorithms", ["sha1", "md5"])
    await page.click("#start")
    row = page.locator('#jobs tr[data-file="data.bin"]')
    await row.locator("text=finished").wait_for()
    async with page.expect_download() as info:
        await row.locator("a").click()
    saved = tmp_path / "hashes.json"
    await (await info.value).save_as(saved)
    body = json.loads(saved.read_text())
    assert body["md5"] == hashlib.md5(b"hello").hexdigest()
    assert body["sha1"] == hashlib.sha1(b"hello").hexdigest()
    assert "sha256" not in body  # the chosen list, not the default
    assert page.errors == []


async def test_choose_files_and_a_failed_file_shows_its_error_and_hint(
    page: Any, base_url: str, account: Account, tmp_path: Path
) -> None:
    good, broken = tmp_path / "good.png", tmp_path / "broken.png"
    good.write_bytes(png_bytes())
    broken.write_bytes(png_bytes((400, 300))[:80])  # sniffs as PNG, cannot be decoded
    await page.goto(f"{base_url}/")
    await sign_in(page, token_for(account))
    await page.set_input_files("#files", [str(good), str(broken)])
    await page.select_option("#target", "webp")
    # a number outside the schema's bounds is stopped at its field, before anything is sent
    await page.fill("#opt-quality", "101")
    await page.click("#start")
    assert await page.locator("#opt-quality").evaluate("e => e.validity.rangeOverflow")
    assert await page.locator("#jobs-section").is_hidden()
    await page.fill("#opt-quality", "90")
    await page.click("#start")
    await page.locator('#jobs tr[data-file="good.png"] >> text=finished').wait_for()
    failed = page.locator('#jobs tr[data-file="broken.png"] td.failed')
    await failed.wait_for()
    assert "Hint:" in await failed.inner_text()


async def test_refused_credentials_say_what_to_do(
    page: Any, base_url: str, account: Account, make_account: Callable[..., Any]
) -> None:
    await page.goto(f"{base_url}/")
    # a secret key: the server refuses it from a browser; the page drops it at once
    await sign_in(page, account.key)
    message = page.locator("#access-message.error")
    await message.wait_for()
    text = await message.inner_text()
    assert "Secret API keys cannot be used from a browser" in text and "convertd keys jwt" in text
    assert await page.input_value("#credential") == ""
    assert await page.locator("#convert").is_hidden()
    # an expired JWT
    await sign_in(page, token_for(account, seconds=-3600))
    await page.locator("#access-message.error >> text=expired").wait_for()
    # a key restricted to another site
    elsewhere = await make_account("elsewhere", allowed_domains=["example.com"])
    await sign_in(page, elsewhere.key)
    await page.locator("#access-message.error >> text=may not be used from the site").wait_for()


async def test_a_key_restricted_to_this_sites_domain_is_accepted(
    page: Any, base_url: str, make_account: Callable[..., Any]
) -> None:
    restricted = await make_account("page", allowed_domains=["localhost"])
    local = base_url.replace("127.0.0.1", "localhost")
    await page.goto(f"{local}/")
    await sign_in(page, restricted.key)
    await page.wait_for_selector("#convert:not([hidden])")


async def test_graphiql_runs_from_the_servers_own_assets(page: Any, base_url: str, account: Account) -> None:
    # Strawberry's page takes the query and the headers from its URL (decodeURIComponent: %20, not +)
    headers = json.dumps({"Authorization": f"Bearer {token_for(account)}"})
    query = "{ formats { filetype } }"
    await page.goto(f"{base_url}/graphql?{urlencode({'q': query, 'headers': headers}, quote_via=quote)}")
    await page.locator(".graphiql-query-editor .CodeMirror").first.wait_for()
    assert await page.title() == "Convertd GraphiQL"
    await page.click(".graphiql-execute-button")
    await page.wait_for_function(
        "() => document.querySelector('.graphiql-response').innerText.includes('\"image\"')"
    )
    requested = [u for u in page.requested if "/static/vendor/" in u]
    assert any("graphiql.min.js" in u for u in requested) and any("react-dom" in u for u in requested)
    assert only_local(page.requested, base_url) == []
    assert page.errors == []

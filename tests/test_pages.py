"""The page at / and GraphiQL at /graphql name only assets this server serves, and the
vendored files are the published npm files (the template's integrity digests)."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import aiohttp

from app.api.pages import STATIC

ASSET = re.compile(r'<(?:script|link)\b[^>]*?\b(?:src|href)="([^"]+)"[^>]*>', re.S)
INTEGRITY = re.compile(r'(?:src|href)="([^"]+)"\s+integrity="sha384-([^"]+)"')


def sha384(data: bytes) -> str:
    return base64.b64encode(hashlib.sha384(data).digest()).decode()


async def fetch_assets(http: aiohttp.ClientSession, base_url: str, html: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for url in ASSET.findall(html):
        if url.startswith("data:"):
            continue
        assert url.startswith("/static/"), f"{url} is not served by Convertd"
        async with http.get(base_url + url) as resp:
            assert resp.status == 200, url
            found[url] = await resp.read()
    return found


async def test_the_page_names_only_its_own_assets(http: aiohttp.ClientSession, base_url: str) -> None:
    async with http.get(f"{base_url}/") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        html = await resp.text()
    assets = await fetch_assets(http, base_url, html)
    assert set(assets) == {
        "/static/page.css",
        "/static/page.js",
        "/static/vendor/graphql-ws@6.4.2/umd/graphql-ws.min.js",
    }
    assert "https://" not in assets["/static/page.css"].decode()  # no external font either


async def test_graphiql_loads_the_vendored_copies_of_its_cdn_files(
    http: aiohttp.ClientSession, base_url: str
) -> None:
    async with http.get(f"{base_url}/graphql", headers={"Accept": "text/html"}) as resp:
        assert resp.status == 200 and "script-src 'self'" in resp.headers["Content-Security-Policy"]
        html = await resp.text()
    assert "unpkg.com" not in html and "<title>Convertd GraphiQL</title>" in html
    assets = await fetch_assets(http, base_url, html)
    assert any("graphiql.min.js" in u for u in assets) and any("react-dom" in u for u in assets)
    pinned = dict(INTEGRITY.findall(html))
    assert set(pinned) == set(assets)  # every file carries Strawberry's digest of the npm file
    for url, digest in pinned.items():
        assert sha384(assets[url]) == digest, f"{url} differs from the published file"


def test_the_manifest_lists_every_vendored_file_with_its_digest() -> None:
    vendor = STATIC / "vendor"
    lines = (vendor / "MANIFEST").read_text().splitlines()
    listed = {path: digest for digest, path in (line.split(" ", 1) for line in lines)}
    present = {str(p.relative_to(vendor)) for p in vendor.rglob("*") if p.is_file() and p.name != "MANIFEST"}
    assert set(listed) == present
    for path, digest in listed.items():
        assert sha384(Path(vendor, path).read_bytes()) == digest, path
    # a folder per package, PACKAGE@VERSION (a scoped one inside its @scope folder)
    packages = [p for p in vendor.rglob("*") if p.is_dir() and "@" in p.name.lstrip("@")]
    assert len(packages) == 6
    assert all((p / "LICENSE").is_file() for p in packages)

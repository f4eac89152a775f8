"""TLS served directly, CONVERTD_REQUIRE_HTTPS (X-Forwarded-Proto from trusted proxies only), CORS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.config import Settings
from tests.conftest import ROOT, Account
from tests.transports import call, everywhere


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def serve(settings: Settings, tmp: Path, *args: str, **env: str) -> AsyncIterator[int]:
    """`convertd serve ARGS` as its own process, on the test servers."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "serve",
        "--no-workers",
        "--port",
        str(port),
        *args,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "CONVERTD_DATABASE_URL": settings.database_url or "",
            "CONVERTD_REDIS_URL": settings.redis_url or "",
            "CONVERTD_SECRET": settings.secret,
            "CONVERTD_DATA_DIR": str(tmp),
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line, "convertd serve exited"
            if "listening on" in line:
                break
        yield port
    finally:
        proc.terminate()
        await proc.wait()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
async def test_serve_with_tls_cert_and_key_serves_https(
    settings: Settings, tmp_path: Path, account: Account
) -> None:
    cert, key = self_signed(tmp_path)
    async with serve(
        settings, tmp_path, "--tls-cert", str(cert), "--tls-key", str(key), CONVERTD_REQUIRE_HTTPS="1"
    ) as port:
        trust = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as http:
            base = f"https://127.0.0.1:{port}"
            async with http.get(f"{base}/v1/keys/me", headers={"X-API-Key": account.key}, ssl=trust) as r:
                assert r.status == 200 and (await r.json())["key_id"] == account.key_id
            # and GraphQL plus the websocket over TLS too
            async with http.post(
                f"{base}/graphql",
                json={"query": "{ quota { usedToday } }"},
                headers={"X-API-Key": account.key},
                ssl=trust,
            ) as r:
                assert "errors" not in await r.json()
            async with http.ws_connect(
                f"wss://127.0.0.1:{port}/graphql", protocols=["graphql-ws"], ssl=trust
            ) as ws:
                await ws.send_json({"type": "connection_init", "payload": {"apiKey": account.key}})
                assert (await ws.receive_json())["type"] == "connection_ack"
            # an unverified certificate is refused by a careful client: it really is our self-signed one
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(f"{base}/v1/", ssl=ssl.create_default_context())
            # plain HTTP on the TLS port gets no answer
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/v1/") as r:
                    await r.read()


async def test_require_https_rejects_plain_http_on_every_transport(
    http: aiohttp.ClientSession, make_server: Any, account: Account
) -> None:
    base = await make_server(require_https=True)
    async with http.get(f"{base}/v1/") as r:
        body = await r.json()
    assert r.status == 403 and body["error_code"] == "HTTPS_REQUIRED"
    assert body["message"] == "All requests must be sent over HTTPS. HTTP connections are rejected."
    assert body["hint"].startswith("Use https://")
    rest = await call("rest", http, base, account.key)
    assert (rest.status, rest.code) == (403, "HTTPS_REQUIRED")
    async with http.post(f"{base}/graphql", json={"query": "{ __typename }"}) as r:
        assert r.status == 403 and (await r.json())["error_code"] == "HTTPS_REQUIRED"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(f"{base}/graphql", protocols=["graphql-transport-ws"])
    assert refused.value.status == 403


async def test_x_forwarded_proto_counts_only_from_a_trusted_proxy(
    http: aiohttp.ClientSession, make_server: Any, account: Account
) -> None:
    forwarded = {"X-Forwarded-Proto": "https"}
    untrusted = await make_server(require_https=True)
    assert (await call("rest", http, untrusted, account.key, headers=forwarded)).code == "HTTPS_REQUIRED"
    trusted = await make_server(require_https=True, trusted_proxies=("127.0.0.1",))
    assert all(o.ok for o in await everywhere(http, trusted, account.key, headers=forwarded))
    assert (await call("rest", http, trusted, account.key)).code == "HTTPS_REQUIRED"
    assert (await call("rest", http, trusted, account.key, headers={"X-Forwarded-Proto": "http"})).code == (
        "HTTPS_REQUIRED"
    )


@pytest.mark.parametrize("path", ["/v1/convert", "/v1/keys/me", "/graphql"])
async def test_cors_preflight_is_answered_without_credentials(
    http: aiohttp.ClientSession, base_url: str, path: str
) -> None:
    headers = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with http.options(base_url + path, headers=headers) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert "authorization" in r.headers["Access-Control-Allow-Headers"].lower()
        assert "Access-Control-Allow-Credentials" not in r.headers  # no cookies, ever


async def test_cors_headers_on_answers_to_browsers_including_refusals(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    browser = {"Origin": "https://app.example"}
    async with http.get(f"{base_url}/v1/keys/me", headers={**browser, "X-API-Key": account.key}) as r:
        assert r.status == 403  # a secret key from a browser; the page can still read why
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "Retry-After" in r.headers["Access-Control-Expose-Headers"]
        assert "X-RateLimit-Remaining" in r.headers["Access-Control-Expose-Headers"]

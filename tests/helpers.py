"""Small helpers the tests share: waiting, local servers, a tiny job, a webhook receiver.

`wait_until` / `wait_until_sync` wait for something to become true instead of sleeping a
fixed time and hoping (a fixed sleep before an assertion either fails on a slow machine or
passes without having checked anything): they poll a condition until it holds, and fail with
a message naming what never happened when the time is up. `start_local` serves an aiohttp
app on a free port; `queue_tiny_job` queues the cheapest real job (a hash) for tests that need
*a* job rather than a conversion; `Receiver` is what a webhook endpoint got (the `receiver`
fixture in conftest.py serves one), `signed_by` checks a delivery's signature.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web

T = TypeVar("T")

INTERVAL = 0.05


async def wait_until(
    predicate: Callable[[], T | Awaitable[T]], timeout: float = 30, what: str = "the condition"
) -> T:
    """Poll `predicate` (plain or async) until it returns something truthy; return that.

    Raises AssertionError naming `what` when `timeout` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]  # an awaitable predicate's result is T
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still not true after {timeout} s")
        await asyncio.sleep(INTERVAL)


def wait_until_sync(predicate: Callable[[], T], timeout: float = 30, what: str = "the condition") -> T:
    """`wait_until` for plain (non-async) tests and helper threads."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still not true after {timeout} s")
        time.sleep(INTERVAL)


async def start_local(app: web.Application, host: str = "127.0.0.1") -> tuple[web.AppRunner, str]:
    """Serve `app` on a free port of `host`: the runner (the caller cleans it up) and the base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def queue_tiny_job(
    http: aiohttp.ClientSession,
    base_url: str,
    key: str,
    data: bytes = b"abc",
    *,
    output_format: str = "txt",
    webhook_url: str | None = None,
) -> str:
    """Queue a hash of `data` through REST /v1/convert (multipart); its job id (202 asserted)."""
    form = aiohttp.FormData()
    form.add_field("file", data, filename="a.txt")
    form.add_field("filetype", "hash")
    form.add_field("output_format", output_format)
    if webhook_url is not None:
        form.add_field("webhook_url", webhook_url)
    async with http.post(f"{base_url}/v1/convert", data=form, headers={"X-API-Key": key}) as r:
        body = await r.json()
        assert r.status == 202, body
    return str(body["job_id"])


@dataclasses.dataclass
class Receiver:
    """A webhook endpoint's record: its URL and every (headers, body) it was sent, in order."""

    url: str
    calls: list[tuple[dict[str, str], bytes]]
    fail_first: int = 0  # answer 503 to this many deliveries first

    async def until_called(self, count: int, timeout: float = 30) -> None:
        await wait_until(lambda: len(self.calls) >= count, timeout, f"webhook called {count} times")


def signed_by(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Whether a delivery's X-Convertd-Signature (t=..., v1=HMAC-SHA256) was made with `secret`."""
    parts = dict(p.split("=", 1) for p in headers["X-Convertd-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), parts["v1"])


def pair_matrix(inputs: Sequence[str], outputs: Sequence[str]) -> list[Any]:
    """Every (input, output) pair as a pytest parameter. The everyday run (`-m "not slow"`)
    keeps a cover in which every input and every output appears at least once, so each
    decoder and each encoder still runs; the other pairs are marked slow (CI runs them all)."""
    n = max(len(inputs), len(outputs))
    cover = {(inputs[i % len(inputs)], outputs[i % len(outputs)]) for i in range(n)}
    return [
        pytest.param(src, dst, id=f"{src}-{dst}", marks=() if (src, dst) in cover else pytest.mark.slow)
        for src in inputs
        for dst in outputs
    ]

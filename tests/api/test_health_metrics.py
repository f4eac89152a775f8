"""Operators' view: /healthz, /readyz, /metrics, request ids and JSON log lines (issue 8, item 13)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from saq import Queue

from app.api.server import build_app
from app.runtime import Runtime
from tests.conftest import Account, GraphQL, png_bytes, wait_for_status
from tests.helpers import Receiver, queue_tiny_job, start_local, wait_until


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, by name and labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(scrape: dict[Any, float], name: str, **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


def form(data: bytes, filename: str, **fields: str) -> aiohttp.FormData:
    out = aiohttp.FormData()
    out.add_field("file", data, filename=filename)
    for name, v in fields.items():
        out.add_field(name, v)
    return out


async def scrape(http: aiohttp.ClientSession, base_url: str) -> dict[Any, float]:
    async with http.get(f"{base_url}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return samples(await r.text())


@pytest.fixture
async def serve_over(rt: Runtime) -> AsyncIterator[Callable[..., Any]]:
    """The app on its own port over a runtime with some parts swapped (a dead Redis, an idle queue)."""
    runners: list[web.AppRunner] = []

    async def start(**parts: Any) -> str:
        runner, url = await start_local(build_app(dataclasses.replace(rt, **parts)))
        runners.append(runner)
        return url

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_healthz_answers_without_credentials(http: aiohttp.ClientSession, base_url: str) -> None:
    async with http.get(f"{base_url}/healthz") as r:
        assert r.status == 200
        assert (await r.json())["status"] == "alive"


async def test_readyz_is_ready_with_postgres_redis_a_worker_and_lists_engines(
    http: aiohttp.ClientSession, base_url: str
) -> None:
    # the session's worker registers with the queue once its start-up is done
    for _ in range(300):
        async with http.get(f"{base_url}/readyz") as r:
            body = await r.json()
            if r.status == 200:
                break
            assert r.status == 503 and body["components"]["workers"]["count"] == 0, body
        await asyncio.sleep(0.1)
    assert r.status == 200, body
    assert body["ok"] is True and body["status"] == "ready"
    assert {name for name, c in body["components"].items() if c["ok"]} == {
        "postgres",
        "redis",
        "storage",
        "workers",
    }
    assert body["components"]["workers"]["count"] >= 1
    # what `convertd doctor` finds: formats per filetype, and what this machine lacks
    assert body["engines"]["filetypes"]["image"]["input_formats"] > 5
    assert body["engines"]["filetypes"]["hash"]["output_formats"] >= 1
    assert isinstance(body["engines"]["missing"], dict)


async def test_readyz_is_503_without_a_worker_and_says_which_part(
    http: aiohttp.ClientSession, rt: Runtime, serve_over: Callable[..., Any]
) -> None:
    idle = Queue.from_url(rt.settings.redis_url, name=f"nobody-{uuid.uuid4().hex[:8]}")
    await idle.connect()
    try:
        base = await serve_over(queue=idle)
        async with http.get(f"{base}/readyz") as r:
            body = await r.json()
            assert r.status == 503
    finally:
        await idle.disconnect()
    assert body["ok"] is False and body["status"] == "not ready"
    assert body["components"]["postgres"]["ok"] and body["components"]["redis"]["ok"]
    assert body["components"]["workers"] == {**body["components"]["workers"], "ok": False, "count": 0}


async def test_readyz_is_503_when_redis_does_not_answer(
    http: aiohttp.ClientSession, serve_over: Callable[..., Any]
) -> None:
    # a port nothing listens on: the connection is refused, as when Redis is down
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0")
    dead_queue = Queue.from_url("redis://127.0.0.1:1/0", name="dead")
    try:
        base = await serve_over(redis=dead, queue=dead_queue)
        async with http.get(f"{base}/readyz") as r:
            body = await r.json()
            assert r.status == 503
        # /healthz does not depend on it
        async with http.get(f"{base}/healthz") as r:
            assert r.status == 200
        # and /metrics still answers, with what it can read
        async with http.get(f"{base}/metrics") as r:
            assert r.status == 200
            assert "convertd_queue_depth" not in await r.text()
    finally:
        await dead.aclose()
    assert body["components"]["postgres"]["ok"] is True
    assert body["components"]["redis"]["ok"] is False and "Connection" in body["components"]["redis"]["error"]
    assert body["components"]["workers"]["ok"] is False


async def test_readyz_is_503_when_postgresql_does_not_answer(
    http: aiohttp.ClientSession, serve_over: Callable[..., Any]
) -> None:
    # a pool that connects on first use, to a port nothing listens on (PostgreSQL down)
    dead = await asyncpg.create_pool("postgresql://convertd@127.0.0.1:1/convertd", min_size=0)
    try:
        base = await serve_over(pool=dead)
        async with http.get(f"{base}/readyz") as r:
            body = await r.json()
            assert r.status == 503
        async with http.get(f"{base}/metrics") as r:
            assert r.status == 200
            assert "convertd_jobs{" not in await r.text()
    finally:
        await dead.close()
    assert body["components"]["postgres"]["ok"] is False and body["components"]["postgres"]["error"]
    assert body["components"]["redis"]["ok"] is True


async def test_metrics_count_requests_jobs_events_and_sandbox_failures(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    before = await scrape(http, base_url)
    headers = {"X-API-Key": account.key}
    async with http.post(
        f"{base_url}/v1/convert", headers=headers,
        data=form(png_bytes(), "a.png", filetype="image", output_format="webp"),
    ) as r:  # fmt: skip
        assert r.status == 202
        ok_job = (await r.json())["job_id"]
    # a PNG signature with a broken body passes the type check, then fails inside the sandbox
    broken = png_bytes()[:40] + b"\x00" * 200
    bad_form = form(broken, "broken.png", filetype="image", output_format="webp")
    async with http.post(f"{base_url}/v1/convert", headers=headers, data=bad_form) as r:
        assert r.status == 202, await r.text()
        bad_job = (await r.json())["job_id"]
    assert (await wait_for_status(http, base_url, account.key, ok_job))["status"] == "finished"
    assert (await wait_for_status(http, base_url, account.key, bad_job))["status"] == "failed"
    async with http.get(f"{base_url}/v1/nowhere/{uuid.uuid4()}") as r:
        assert r.status == 404
    after = await scrape(http, base_url)

    def grew(name: str, by: float = 1, **labels: str) -> bool:
        return value(after, name, **labels) - value(before, name, **labels) >= by

    assert grew("convertd_http_requests_total", 2, method="POST", route="/v1/convert", status="202")
    assert grew("convertd_http_requests_total", 2, method="GET", route="/v1/status/{job_id}", status="200")
    # unknown paths share one label: a scanner cannot blow up the series count
    assert grew("convertd_http_requests_total", 1, method="GET", route="unmatched", status="404")
    assert not any("nowhere" in str(labels) for _, labels in after)
    for end in ("finished", "failed"):
        assert grew("convertd_job_duration_seconds_count", filetype="image", converter="pillow", status=end)
    assert grew("convertd_sandbox_failures_total", 1, kind="converter")
    assert grew("convertd_events_published_total", 4)  # each job: processing, then its end at least
    assert value(after, "convertd_jobs", status="finished") >= 1
    assert value(after, "convertd_jobs", status="failed") >= 1
    assert ("convertd_queue_depth", frozenset({("state", "queued")})) in after
    assert value(after, "convertd_workers") >= 1
    ours = [name for name, _ in after if not name.startswith(("python_", "process_"))]
    assert all(name.startswith("convertd_") for name in ours)


async def test_request_id_is_returned_taken_from_a_sane_caller_and_replaced_when_not(
    http: aiohttp.ClientSession, base_url: str, account: Account, gql: GraphQL
) -> None:
    async with http.get(f"{base_url}/v1/formats", headers={"X-API-Key": account.key}) as r:
        made = r.headers["X-Request-Id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made)
    theirs = "edge-7f3a9c:1.2"
    async with http.get(f"{base_url}/v1/status/nope", headers={"X-API-Key": account.key,
                                                                 "X-Request-Id": theirs}) as r:  # fmt: skip
        assert r.status == 404 and r.headers["X-Request-Id"] == theirs  # error answers too
    for bad in ("has space", "x" * 129, 'quote"d', "a\tb"):
        async with http.get(f"{base_url}/healthz", headers={"X-Request-Id": bad}) as r:
            assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-Id"]), bad
    # unmatched routes, refusals before any handler, and GraphQL
    async with http.get(f"{base_url}/nothing-here", headers={"X-Request-Id": "abc"}) as r:
        assert r.status == 404 and r.headers["X-Request-Id"] == "abc"
    async with http.post(f"{base_url}/graphql", json={"query": "{ me { id } }"},
                         headers={"X-Request-Id": "gql-1"}) as r:  # fmt: skip
        assert r.headers["X-Request-Id"] == "gql-1"
    # a streamed answer (server-sent events) gets it before its first byte
    async with http.post(
        f"{base_url}/v1/convert", headers={"X-API-Key": account.key},
        data=form(b"abc", "a.txt", filetype="hash", output_format="txt"),
    ) as r:  # fmt: skip
        job_id = (await r.json())["job_id"]
    async with http.get(f"{base_url}/v1/events/{job_id}", headers={"X-API-Key": account.key,
                                                                  "X-Request-Id": "sse-1"}) as r:  # fmt: skip
        assert r.headers["Content-Type"] == "text/event-stream"
        assert r.headers["X-Request-Id"] == "sse-1"
        await r.read()


async def test_the_request_id_is_carried_into_the_jobs_log_lines(
    http: aiohttp.ClientSession,
    base_url: str,
    account: Account,
    rt: Runtime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    rid = f"trace-{uuid.uuid4().hex}"
    async with http.post(
        f"{base_url}/v1/convert", headers={"X-API-Key": account.key, "X-Request-Id": rid},
        data=form(b"abc", "a.txt", filetype="hash", output_format="txt"),
    ) as r:  # fmt: skip
        assert r.headers["X-Request-Id"] == rid
        job_id = (await r.json())["job_id"]
    assert (await wait_for_status(http, base_url, account.key, job_id))["status"] == "finished"
    assert await rt.pool.fetchval("SELECT request_id FROM jobs WHERE id = $1", uuid.UUID(job_id)) == rid
    mine = [rec for rec in caplog.records if getattr(rec, "request_id", None) == rid]
    access = [rec for rec in mine if rec.name == "convertd.access"]
    assert access and access[0].status == 202 and access[0].path == "/v1/convert"  # type: ignore[attr-defined]
    # the worker's lines for the job: taken and ended, each with the job's id and the request's
    job_lines = [rec for rec in mine if rec.name == "convertd.jobs"]
    assert [rec.getMessage() for rec in job_lines] == ["job taken", "job finished"]
    assert all(rec.job_id == job_id for rec in job_lines)  # type: ignore[attr-defined]
    # a line of another request is not tagged with this id
    assert not [rec for rec in caplog.records if rec.name == "convertd.access"
                and getattr(rec, "request_id", None) == rid and rec.path != "/v1/convert"]  # fmt: skip


async def test_metrics_count_webhook_deliveries_by_outcome(
    http: aiohttp.ClientSession, base_url: str, account: Account, receiver: Receiver
) -> None:
    before = await scrape(http, base_url)
    job_id = await queue_tiny_job(http, base_url, account.key, webhook_url=receiver.url)
    await wait_for_status(http, base_url, account.key, job_id)

    async def delivered() -> bool:
        async with http.get(f"{base_url}/v1/status/{job_id}", headers={"X-API-Key": account.key}) as r:
            return bool((await r.json()).get("webhook_status") == "delivered")

    await wait_until(delivered, 30, "the webhook delivered")
    after = await scrape(http, base_url)
    assert len(receiver.calls) == 1
    delivered = ("convertd_webhook_deliveries_total", frozenset({("outcome", "delivered")}))
    assert after[delivered] - before.get(delivered, 0.0) == 1


async def test_the_access_line_can_be_switched_off_ids_and_counts_stay(
    http: aiohttp.ClientSession, make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    quiet = await make_server(access_log=False)
    loud = await make_server()
    for base, rid in ((quiet, "quiet-1"), (loud, "loud-1"), (loud, "probe-1")):
        path = "/healthz" if rid.startswith("probe") else "/v1/"
        async with http.get(f"{base}{path}", headers={"X-Request-Id": rid}) as r:
            assert r.headers["X-Request-Id"] == rid
    lines = {rec.request_id for rec in caplog.records if rec.name == "convertd.access"}  # type: ignore[attr-defined]
    assert "loud-1" in lines and "quiet-1" not in lines
    assert "probe-1" not in lines  # probes are counted, not logged

"""Is this instance alive, and can it do its work? (GET /healthz, GET /readyz)"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.runtime import Runtime

CHECK_TIMEOUT = 2.0  # seconds one dependency may take to answer before it counts as down


@dataclasses.dataclass(frozen=True)
class Readiness:
    ready: bool
    components: dict[str, dict[str, Any]]
    engines: dict[str, Any]


async def _check(probe: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            extra = await probe()
    except Exception as exc:  # down, refused, timed out: say which, never raise
        reason = str(exc) or type(exc).__name__
        return {"ok": False, "error": f"{type(exc).__name__}: {reason}"[:300]}
    ok = extra.pop("ok", True)
    return {"ok": ok, "latency_ms": round((time.perf_counter() - started) * 1000, 1), **extra}


@functools.cache
def engines() -> dict[str, Any]:
    """What `convertd doctor` reports about engines: formats per filetype and what is missing.
    Fixed for the life of the process (the machine's engines do not change under it)."""
    from converters.registry import registry

    reg = registry()
    return {
        "filetypes": {
            name: {"input_formats": len(g["input_formats"]), "output_formats": len(g["output_formats"])}
            for name, g in reg.formats().items()
        },
        "missing": dict(sorted(reg.unavailable().items())),
    }


async def readiness(rt: Runtime) -> Readiness:
    """Ready when PostgreSQL, Redis and the file store answer and at least one worker is alive."""

    async def postgres() -> dict[str, Any]:
        await rt.pool.fetchval("SELECT 1")
        return {}

    async def redis() -> dict[str, Any]:
        await rt.redis.ping()
        return {}

    async def storage() -> dict[str, Any]:
        await rt.storage.files.ping()
        return {"kind": rt.storage.files.kind}

    async def workers() -> dict[str, Any]:
        info = await rt.queue.info()  # saq workers refresh their entry every 10 s (TTL 11 s)
        count = len(info["workers"])
        return {"ok": count > 0, "count": count, "queued": info["queued"], "active": info["active"]}

    checks = await asyncio.gather(_check(postgres), _check(redis), _check(storage), _check(workers))
    components = dict(zip(("postgres", "redis", "storage", "workers"), checks, strict=True))
    return Readiness(
        ready=all(c["ok"] for c in components.values()),
        components=components,
        engines=await asyncio.to_thread(engines),
    )

"""A few seconds' memory of who a key or a JWT's kid belongs to, dropped at once on change.

Every authenticated call used to look its key up in PostgreSQL. The answer (key, account,
plan, restrictions) changes rarely, so each process keeps it for `TTL` seconds. Triggers
(migration 004) NOTIFY `convertd_auth` whenever anything it depends on changes, by any
writer; every process LISTENs on a connection of its own and clears its cache when told.
While that connection is down nothing is cached, so a missed notification can never leave
a revoked key usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import asyncpg

log = logging.getLogger(__name__)
CHANNEL = "convertd_auth"
TTL = 10.0  # seconds an answer is trusted even without a notification
MAX_ENTRIES = 10_000
RECONNECT_DELAY = 1.0


class AuthCache:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._entries: dict[Any, tuple[float, Any]] = {}
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self.generation = 0  # bumped by every clear: an answer read before one is not kept

    @property
    def live(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def get(self, key: Any) -> Any:
        entry = self._entries.get(key)
        if entry is None or not self.live:
            return None
        if time.monotonic() - entry[0] > TTL:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: Any, value: Any, generation: int) -> None:
        """Keep `value`, read from the database after `generation` was current."""
        if not self.live or generation != self.generation:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()  # rare: cheaper than tracking an LRU order on every hit
        self._entries[key] = (time.monotonic(), value)

    def clear(self, *_: Any) -> None:
        self.generation += 1
        self._entries.clear()

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.create_task(self._keep_connected())

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self.database_url)
        conn.add_termination_listener(self._on_lost)
        await conn.add_listener(CHANNEL, self.clear)
        self._lost.clear()
        self._conn = conn

    def _on_lost(self, *_: Any) -> None:
        self.clear()
        self._lost.set()

    async def _keep_connected(self) -> None:
        while True:
            await self._lost.wait()
            self._conn = None
            self.clear()
            try:
                await self._connect()
            except (OSError, asyncpg.PostgresError):
                log.warning("auth cache: cannot listen for changes; caching is off until it can")
                await asyncio.sleep(RECONNECT_DELAY)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None
        self.clear()

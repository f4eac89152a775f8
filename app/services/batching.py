"""Writes deferred into batches: what a request records waits in memory and is written by a
background task every `INTERVAL` at most (sooner when the subclass says it is due), and
once more when the process stops. The request log and the keys' call counts use it."""

from __future__ import annotations

import abc
import asyncio
import contextlib


class Batcher(abc.ABC):
    INTERVAL = 0.5  # seconds a recorded item waits in memory at most

    def __init__(self) -> None:
        self._due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()

    async def flush(self) -> None:
        """Write everything recorded so far, and wait for a write already under way: a
        reader that flushes then reads must see every item recorded before it flushed."""
        async with self._writing:
            await self._write()

    @abc.abstractmethod
    async def _write(self) -> None:
        """Write what waits; never raises (a request must not fail on it)."""

    def _recorded(self, *, due: bool = False) -> None:
        """Called after each record: starts the writer on first use; `due` writes at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        if due:
            self._due.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), self.INTERVAL)
            self._due.clear()
            await self.flush()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

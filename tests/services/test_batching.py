"""Deferred writes (`app.services.batching`): a reader that flushes, then reads, sees every
item recorded before it flushed, even while the background writer is half-way through."""

from __future__ import annotations

import asyncio

from app.services.batching import Batcher


class _Gated(Batcher):
    """Items written into `written`; the first write waits on `gate` (a slow database)."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[int] = []
        self.written: list[int] = []
        self.gate = asyncio.Event()
        self.first = True

    async def _write(self) -> None:
        batch, self.pending = self.pending, []
        if self.first:
            self.first = False
            await self.gate.wait()
        self.written += batch


async def test_a_flush_waits_for_the_write_under_way() -> None:
    batcher = _Gated()
    batcher.pending.append(1)
    background = asyncio.create_task(batcher.flush())  # the writer has taken item 1
    await asyncio.sleep(0)
    batcher.pending.append(2)
    reader = asyncio.create_task(batcher.flush())
    await asyncio.sleep(0.05)
    assert not reader.done()  # item 1 is not written yet: returning now would hide it
    batcher.gate.set()
    await reader
    assert batcher.written == [1, 2]
    await background

"""Job change events on Redis: one channel, the whole job in each message.

Every change of a job is written to PostgreSQL first, then published here with the job's
`version`. A subscriber registers with the hub *before* it reads the job from PostgreSQL,
so nothing published in between is lost, and drops events at or below the version it read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis

from app import metrics
from app.models import Job

log = logging.getLogger(__name__)
CHANNEL = "convertd:job-events"
Resync = Callable[[list[uuid.UUID]], Awaitable[list[Job]]]  # the jobs with these ids, as stored


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(type(value))


def encode(job: Job) -> str:
    # shallow: asdict() deep-copies every value, and a job's values are plain data
    return json.dumps({f.name: getattr(job, f.name) for f in _FIELDS}, default=_default)


_FIELDS = dataclasses.fields(Job)


def decode(message: str | bytes) -> Job:
    data = json.loads(message)
    data["id"] = uuid.UUID(data["id"])
    for name in ("created_at", "started_at", "finished_at", "updated_at", "expired_at"):
        if data[name] is not None:
            data[name] = datetime.fromisoformat(data[name])
    return Job.from_row(data)


async def publish(redis: aioredis.Redis, job: Job) -> None:
    await redis.publish(CHANNEL, encode(job))
    metrics.EVENTS.inc()


class EventHub:
    """One Redis subscription per process, fanned out to in-process listeners by job id."""

    def __init__(self, redis: aioredis.Redis, resync: Resync | None = None) -> None:
        self._redis = redis
        self._resync = resync
        self._listeners: dict[uuid.UUID, set[asyncio.Queue[Job]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="convertd-event-hub")
        await asyncio.wait_for(self._ready.wait(), 10)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    if self._ready.is_set():
                        await self._catch_up()
                    self._ready.set()
                    async for message in pubsub.listen():
                        self._dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a dropped Redis connection: resubscribe, keep serving
                log.warning("job event subscription failed (%r); resubscribing", exc)
                await asyncio.sleep(1)

    async def _catch_up(self) -> None:
        """After a lost subscription, hand every listener its job as it stands now: what was
        published meanwhile never reached us (listeners drop versions they have seen)."""
        if self._resync is None or not self._listeners:
            return
        for job in await self._resync(list(self._listeners)):
            for queue in self._listeners.get(job.id, ()):
                queue.put_nowait(job)

    def _dispatch(self, data: bytes | str) -> None:
        # every process hears every job's events: one nobody here follows is not decoded
        # (encode() writes the id first: {"id": "<uuid>", ...})
        head = data[8:44] if isinstance(data, bytes) else data[8:44].encode()
        try:
            if uuid.UUID(head.decode("ascii")) not in self._listeners:
                return
        except ValueError:
            pass  # not the expected layout: decode it whole below
        try:
            job = decode(data)
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed job event")
            return
        for queue in self._listeners.get(job.id, ()):
            queue.put_nowait(job)

    def add_listener(self, job_id: uuid.UUID) -> asyncio.Queue[Job]:
        """A queue that gets every event of the job from now on (registered at once, so a
        caller can register, then read the job, and miss nothing in between)."""
        queue: asyncio.Queue[Job] = asyncio.Queue()
        self._listeners.setdefault(job_id, set()).add(queue)
        return queue

    def remove_listener(self, job_id: uuid.UUID, queue: asyncio.Queue[Job]) -> None:
        listeners = self._listeners.get(job_id)
        if listeners is not None:
            listeners.discard(queue)
            if not listeners:
                del self._listeners[job_id]

    @contextlib.asynccontextmanager
    async def listen(self, job_id: uuid.UUID) -> AsyncIterator[asyncio.Queue[Job]]:
        queue = self.add_listener(job_id)
        try:
            yield queue
        finally:
            self.remove_listener(job_id, queue)

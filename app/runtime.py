"""The live connections one process shares: database pool, Redis, queue, storage, events."""

from __future__ import annotations

import dataclasses
import uuid

import asyncpg
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from saq import Queue

from app import db
from app.auth.cache import AuthCache
from app.config import Settings
from app.events import EventHub
from app.models import Job
from app.services import job_rows
from app.services.dispatch import FairQueue
from app.services.key_calls import KeyCalls
from app.services.usage import RequestLog
from app.storage import Storage
from app.stores import FileStore, open_store

REDIS_CONNECTIONS = 64  # per process
REDIS_WAIT = 20  # seconds a command waits for a free connection before it fails


@dataclasses.dataclass
class Runtime:
    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis
    queue: Queue
    storage: Storage
    request_log: RequestLog
    hub: EventHub | None = None
    auth_cache: AuthCache | None = None  # only processes that authenticate callers need one
    key_calls: KeyCalls = dataclasses.field(init=False)  # each key's calls, counted in batches

    def __post_init__(self) -> None:
        self.key_calls = KeyCalls(self.pool)

    @classmethod
    async def open(cls, settings: Settings, *, api: bool = True) -> Runtime:
        """Everything a process needs; `api` adds what only processes answering callers use."""
        assert settings.database_url and settings.redis_url
        pool = await db.create_pool(settings.database_url)
        # a blocking pool: a burst of callers waits for a connection instead of failing
        # with "Too many connections" (which took down websocket handshakes under load)
        redis = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                settings.redis_url,
                max_connections=REDIS_CONNECTIONS,
                timeout=REDIS_WAIT,
                # after a Redis restart every pooled connection is stale once: reconnect
                # and retry rather than fail one request per connection
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            )
        )
        # API nodes and workers of one deployment must agree on `fair`: it decides where
        # a queued job waits (app/services/dispatch.py)
        kind = FairQueue if settings.queue.fair else Queue
        queue = kind.from_url(settings.redis_url, name=settings.queue.name)
        await queue.connect()
        storage = Storage(settings.storage_dir, settings.secret, open_files(settings))
        await storage.start()

        async def stored(ids: list[uuid.UUID]) -> list[Job]:
            return await job_rows.by_ids(pool, ids)

        # workers follow their jobs' events too (a cancel stops the converter at once)
        hub = EventHub(redis, resync=stored)
        await hub.start()
        auth_cache = None
        if api:
            auth_cache = AuthCache(settings.database_url)
            await auth_cache.start()
        return cls(settings, pool, redis, queue, storage, RequestLog(pool), hub, auth_cache)

    async def close(self) -> None:
        await self.request_log.stop()
        await self.key_calls.stop()
        await self.storage.close()
        if self.hub:
            await self.hub.stop()
        if self.auth_cache:
            await self.auth_cache.stop()
        await self.queue.disconnect()
        await self.redis.aclose()
        await self.pool.close()


def open_files(settings: Settings) -> FileStore:
    """The file store CONVERTD_STORAGE_URL names (the local storage directory by default)."""
    return open_store(
        settings.storage_url,
        settings.storage_dir,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        presign=settings.s3_presign,
    )

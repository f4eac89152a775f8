"""PostgreSQL, Redis or the object store out of reach: the one place such failures become a 503.

Every request that needs a server which is down (restarting, failed over, overloaded)
answers 503 with `Retry-After` and a hint, on REST and GraphQL alike, instead of a 500:
the caller did nothing wrong and should simply try again. Connections are made afresh by
the pools on the next request, so the service recovers by itself when the server is back.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import asyncpg
import botocore.exceptions
import redis.exceptions

from app import db
from app.errors import ConvertdError, ErrorCode

if TYPE_CHECKING:
    from app.runtime import Runtime

RETRY_AFTER_SECONDS = 5

# What the client libraries raise when their server cannot be reached or went away
# mid-request (a query that fails for its own reasons is not among them).
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused, reset, broken pipe: both clients let these through
    TimeoutError,  # connecting or waiting for a pooled connection
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08; the connection closed mid-query
    # a pooled connection whose server died between two queries ("cannot switch to state
    # ..."): we never share a connection between tasks, so nothing else raises it
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    redis.exceptions.ConnectionError,  # includes BusyLoadingError (loading its data)
    redis.exceptions.TimeoutError,
    # the object store (app/stores/s3.py): refused, timed out or cut off, after the
    # client's own few retries
    botocore.exceptions.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError
    botocore.exceptions.HTTPClientError,  # ReadTimeoutError, ConnectionClosedError
)


def is_outage(exc: BaseException) -> bool:
    return isinstance(exc, OUTAGE_ERRORS) or _store_overloaded(exc)


def _store_overloaded(exc: BaseException) -> bool:
    """The object store answered, but with a 5xx (SlowDown, InternalError, a proxy's 502):
    its trouble, not the request's."""
    if not isinstance(exc, botocore.exceptions.ClientError):
        return False
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) >= 500


async def wait_until_reachable(rt: Runtime, seconds: float = 300) -> bool:
    """Wait for PostgreSQL, Redis and the file store to answer again (True), or give up
    after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            await db.ping(rt.pool)
            await rt.redis.ping()
            await rt.storage.files.ping()
            return True
        except Exception as exc:
            if not is_outage(exc):
                raise
        await asyncio.sleep(0.5)
    return False


def unavailable(exc: BaseException) -> ConvertdError:
    """The error a caller gets for `exc`, an outage of one of our servers."""
    if isinstance(exc, redis.exceptions.RedisError):
        server = "queue"
    elif isinstance(exc, botocore.exceptions.BotoCoreError | botocore.exceptions.ClientError):
        server = "object store"
    else:
        server = "database"
    return ConvertdError(
        ErrorCode.SERVICE_UNAVAILABLE,
        f"The service is briefly unavailable: its {server} server cannot be reached.",
        hint=f"Try again in a few seconds (Retry-After: {RETRY_AFTER_SECONDS}); nothing of this "
        "request was kept unless its answer said so.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )

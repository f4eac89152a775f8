"""jobUpdates over websockets: each version of a job rendered once, written to every follower.

Strawberry runs a subscription's selection set once per subscriber per event and sends each
result from that subscriber's own task: with a thousand subscribers of one job, an event
cost a thousand GraphQL executions and task switches before the last one heard of it.

Here a websocket subscriber still subscribes as before: its operation is validated and
admitted by Strawberry and our extensions, and the job as it stands is read with its own
credentials (a caller that may not see the job gets an error and nothing else) and sent
through Strawberry. Every later version comes from a *feed*: one per runtime, job, document
text, operation name, variables, account and base URL, which is everything a rendered
payload can depend on (the status and download URLs use the request's host; no Job field
reads the caller, and the feed renders with a context that has no caller, so one that did
would fail loudly rather than leak). The feed listens to the job's events once, renders each
version once, and writes the payload, framed with each follower's operation id, straight
to each follower's socket. A follower whose socket is backed up (or a big payload) gets its
messages queued and written by its own task, so a slow reader never holds up the others.

Versions stay contiguous as in `job_reads.watch`: a follower joins its feed (whose event
listener is registered from the feed's start) before it reads the job, and gets only the
versions above the one it read, each once, in order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import dataclasses
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web
from graphql.execution import ExecutionResult, execute_subscription_event
from graphql.execution.executor_throwing_on_incremental import ExecutorThrowingOnIncremental
from graphql.language import parse

from app.api.graphql.context import Context
from app.api.graphql.jobs.types import Job
from app.errors import ConvertdError, ErrorCode, not_found
from app.models import Job as JobModel

if TYPE_CHECKING:
    import strawberry

    from app.runtime import Runtime

log = logging.getLogger(__name__)

# The feed writes a message itself only when the socket holds at most BACKED_UP unsent (at or
# below asyncio's default low-water mark the transport is never paused) and the message is at
# most BIG: then the buffer stays under the high-water mark (64 KiB), the protocol is not
# paused, and aiohttp's send_frame never waits for a drain. Anything else is queued for the
# follower's own task, so one slow reader or one big payload never holds up the others.
BACKED_UP = 16 * 1024
BIG = 32 * 1024

NO_CALLER = ConvertdError(
    ErrorCode.INTERNAL,
    "A jobUpdates field depends on the caller, but its payload is shared by every subscriber.",
    hint="Fields of Job must not read the caller; see app/api/graphql/jobs/fanout.py.",
)


@dataclasses.dataclass(frozen=True)
class Outlet:
    """Where one websocket operation's results go; set by the protocol handlers (view.py)
    for the operation's task."""

    kind: str  # the result message's type: "next" (graphql-transport-ws) or "data" (graphql-ws)
    op_id: str
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None

    @classmethod
    def of(cls, kind: str, message: Any) -> Outlet | None:
        """From a subscribe/start message, or None when it is malformed (Strawberry answers it)."""
        try:
            payload = message["payload"]
            outlet = cls(kind, message["id"], payload["query"], payload.get("variables"),
                         payload.get("operationName"))  # fmt: skip
        except (KeyError, TypeError, AttributeError):
            return None
        ok = isinstance(outlet.op_id, str) and isinstance(outlet.query, str)
        ok = ok and isinstance(outlet.variables, dict | None)
        return outlet if ok and isinstance(outlet.operation_name, str | None) else None


OUTLET: contextvars.ContextVar[Outlet | None] = contextvars.ContextVar("convertd_outlet", default=None)


class Follower:
    """One subscriber's operation as its feed sees it."""

    def __init__(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport | None, outlet: Outlet
    ) -> None:
        self.ws, self.transport = ws, transport
        # the message around a rendered payload, as Strawberry's handlers format it
        self.prefix = f'{{"id": {json.dumps(outlet.op_id)}, "type": "{outlet.kind}", "payload": '.encode()
        self.last_version: int | None = None  # None until its own read of the job was sent
        self.joining: list[tuple[int, bool, bytes]] = []  # rendered while it read the job
        self.backlog: collections.deque[bytes] = collections.deque()
        self.finished = False
        self.error: BaseException | None = None
        self.gone = False
        self.task = asyncio.current_task()
        self._wake = asyncio.Event()

    def backed_up(self) -> bool:
        transport = self.transport
        return transport is None or transport.get_write_buffer_size() > BACKED_UP

    def dropped(self) -> bool:
        """Its operation was stopped or its socket closed: nothing more is written for it."""
        return self.gone or self.ws.closed or (self.task is not None and self.task.cancelling() > 0)

    async def offer(self, version: int, terminal: bool, payload: bytes) -> None:
        """Called by the feed, in version order, with every version it rendered."""
        if self.last_version is None:
            self.joining.append((version, terminal, payload))
            return
        if version <= self.last_version or self.finished or self.dropped():
            return
        self.last_version = version
        text = self.prefix + payload + b"}"
        if self.backlog or len(text) > BIG or self.backed_up():
            self.backlog.append(text)  # its own task writes it, after what is queued
            self._wake.set()
        else:
            try:
                # uncompressed, small, the socket not backed up: written at once, never waits
                await self.ws.send_frame(text, WSMsgType.TEXT)
            except (ConnectionError, RuntimeError):
                self.gone = True
                self._wake.set()
                return
        if terminal:
            self.finished = True
            self._wake.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._wake.set()

    async def follow(self, version: int) -> None:
        """After the job as read at `version` was sent: every later version, until the last."""
        self.last_version = version
        joined, self.joining = self.joining, []
        for v, terminal, payload in joined:
            if v > self.last_version and not self.finished:
                self.last_version = v
                self.backlog.append(self.prefix + payload + b"}")
                self.finished = terminal
        while True:
            while self.backlog and not self.dropped():
                # the frame is written before send_frame first waits, so the feed (which
                # queues while anything is queued) cannot overtake it
                await self.ws.send_frame(self.backlog.popleft(), WSMsgType.TEXT)
            if self.error is not None:
                raise self.error
            if self.finished or self.dropped():
                return
            self._wake.clear()
            await self._wake.wait()


FeedKey = tuple[int, uuid.UUID, str, str | None, str, str, Any]


class Feed:
    """One job's events for every follower with the same document, variables and audience."""

    def __init__(
        self, key: FeedKey, rt: Runtime, job_id: uuid.UUID, outlet: Outlet, render_ctx: Context
    ) -> None:
        from app.api.graphql.schema import MASK_ERRORS, ConvertdErrors, schema  # (it imports us)

        self.key, self.rt, self.job_id = key, rt, job_id
        self.followers: set[Follower] = set()
        self._schema = schema
        built = ExecutorThrowingOnIncremental.build(
            schema._schema,
            parse(outlet.query),
            context_value=render_ctx,
            raw_variable_values=outlet.variables,
            operation_name=outlet.operation_name,
        )
        if isinstance(built, list):  # the subscriber's own execution got past this already
            raise built[0]
        self._executor = built
        self._mask = ConvertdErrors(**MASK_ERRORS)
        assert rt.hub is not None
        # registered now, before the first follower reads the job
        self._queue = rt.hub.add_listener(job_id)
        self._task = asyncio.create_task(self._run(), name=f"convertd-feed-{job_id}")

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            if not any(f.last_version is None or job.version > f.last_version for f in self.followers):
                continue
            try:
                payload = await self._render(job)
            except Exception as exc:  # never a silent gap in a follower's versions
                log.exception("rendering a job event failed")
                for follower in self.followers:
                    follower.fail(exc)
                continue
            for follower in list(self.followers):
                try:
                    await follower.offer(job.version, job.terminal, payload)
                except Exception as exc:  # one follower's failure ends its stream, not the others'
                    log.exception("sending a job event failed")
                    follower.fail(exc)

    async def _render(self, job: JobModel) -> bytes:
        """The `payload` of a result message, as Strawberry would send it (errors logged, then
        masked as the schema's MaskErrors does)."""
        result = execute_subscription_event(self._executor.build_per_event_executor(Job.from_model(job)))
        if not isinstance(result, ExecutionResult):
            result = await result
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            self._schema.process_errors(list(result.errors))
            mask = self._mask
            payload["errors"] = [
                (mask.anonymise_error(error) if mask.should_mask_error(error) else error).formatted
                for error in result.errors
            ]
        return json.dumps(payload).encode()

    def close(self) -> None:
        _feeds.pop(self.key, None)
        assert self.rt.hub is not None
        self.rt.hub.remove_listener(self.job_id, self._queue)
        self._task.cancel()


_feeds: dict[FeedKey, Feed] = {}


def outlet_for(info: strawberry.Info[Context, None]) -> Outlet | None:
    """This operation's outlet when it runs on one of our websockets, else None."""
    outlet = OUTLET.get()
    return outlet if outlet is not None and isinstance(info.context.response, web.WebSocketResponse) else None


@contextlib.asynccontextmanager
async def following(ctx: Context, outlet: Outlet, job_id: str) -> AsyncIterator[tuple[uuid.UUID, Follower]]:
    """Join the feed for this operation (made when it is the first), for as long as the block runs."""
    try:
        ident = uuid.UUID(job_id)
    except ValueError:
        raise not_found("Job") from None
    principal = ctx.principal
    variables = json.dumps(outlet.variables, sort_keys=True, separators=(",", ":"))
    key: FeedKey = (id(ctx.rt), ident, outlet.query, outlet.operation_name, variables,
                    ctx.base_url, principal.account_id)  # fmt: skip
    feed = _feeds.get(key)
    if feed is None:
        render_ctx = Context(ctx.request, ctx.response, ctx.rt, ctx.base_url)
        render_ctx.authenticated(None, NO_CALLER)
        feed = _feeds[key] = Feed(key, ctx.rt, ident, outlet, render_ctx)
    assert isinstance(ctx.response, web.WebSocketResponse)
    follower = Follower(ctx.response, ctx.request.transport, outlet)
    feed.followers.add(follower)
    try:
        yield ident, follower
    finally:
        feed.followers.discard(follower)
        if not feed.followers:
            feed.close()

"""What the worker hears from a running job: its status socket, message pipe and output.

The fork server answers on the status socket (`Status`: the job's pid, then how it ended;
writing ``kill`` ends it); the job writes JSON lines on its message pipe (`read_messages`:
progress, forwarded at most every `PROGRESS_INTERVAL`, then its result or error); whatever
its libraries print goes to the output pipe, of which only the tail is kept (`drain`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from converters.sandbox.servers import ZygoteDied

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.1  # seconds between forwarded progress updates (at most ~10/s)
STDERR_TAIL = 8192  # bytes of the child's stdout/stderr kept for the logs


class Status:
    """The job's status socket: its pid, then how it ended; writing `kill` ends it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.pid: int | None = None
        self.returncode: int | None = None
        self.disk_exceeded = False
        self.done = False

    async def wait(self) -> int | None:
        """The exit code (negative: killed by that signal). Raises ZygoteDied."""
        loop = asyncio.get_running_loop()
        while not self.done:
            try:
                data = await loop.sock_recv(self.sock, 65536)
            except OSError as exc:
                raise ZygoteDied(str(exc)) from exc
            if not data:
                self.done = True
                raise ZygoteDied("the fork server closed the job's status socket")
            msg = json.loads(data)
            if "pid" in msg:
                self.pid = int(msg["pid"])
            elif "error" in msg:
                self.done = True
                raise ZygoteDied(str(msg["error"]))
            elif "status" in msg:
                self.returncode = int(msg["status"])
                self.disk_exceeded = bool(msg.get("disk"))
                self.done = True
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(b"kill")


async def read_messages(
    reader: asyncio.StreamReader,
    on_progress: Callable[[float], Awaitable[None]] | None,
) -> dict[str, Any]:
    """Consume the child's message pipe; forward progress; return the final message."""
    final: dict[str, Any] = {}
    sent = 0.0
    pending: float | None = None
    last_time = 0.0

    async def forward(value: float) -> None:
        nonlocal sent, last_time, pending
        sent, last_time, pending = value, time.monotonic(), None
        if on_progress is None:
            return
        try:
            await on_progress(value)
        except Exception:  # a failing progress sink must not fail the conversion
            log.warning("progress callback failed", exc_info=True)

    while True:
        try:
            line = await reader.readline()
        except ValueError:  # an over-long line: the child is not speaking our protocol
            break
        if not line:
            break
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if not isinstance(msg, dict):
            continue
        if "progress" in msg:
            try:
                value = min(max(float(msg["progress"]), 0.0), 1.0)
            except (TypeError, ValueError):
                continue
            if value <= sent:
                continue
            if time.monotonic() - last_time >= PROGRESS_INTERVAL:
                await forward(value)
            else:
                pending = value
        elif "result" in msg or "error" in msg:
            final = msg
    if pending is not None and pending > sent and "result" in final:
        await forward(pending)
    return final


async def drain(stream: asyncio.StreamReader, tail: bytearray) -> None:
    while chunk := await stream.read(65536):
        tail.extend(chunk)
        del tail[:-STDERR_TAIL]

"""Logs as one JSON object per line, each line carrying the request (and job) it belongs to.

The request id comes from the caller's `X-Request-Id` when it is a sane one, else a new one;
it is returned in `X-Request-Id`, stored on the jobs the request creates, and set again by the
worker while it runs such a job, so `grep <id>` finds the request and its job's lines in the
logs of every process. Context variables make it follow each request's task and nothing else.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import sys
import uuid
from collections.abc import Iterator

from pythonjsonlogger.json import JsonFormatter

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("convertd_request_id", default=None)
job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("convertd_job_id", default=None)

# printable, no spaces or quotes: safe to echo in a header and to grep for; long enough for
# the ids proxies and tracing systems send (uuids, W3C trace ids, "Root=1-..." of AWS)
_SANE = re.compile(r"^[A-Za-z0-9._:=+/@-]{1,128}$")


def incoming_or_new(value: str | None) -> str:
    """The caller's request id if it is a sane one, else a fresh one."""
    return value if value is not None and _SANE.match(value) else uuid.uuid4().hex


@contextlib.contextmanager
def job_context(job: str, request: str | None) -> Iterator[None]:
    """Log lines written inside carry the job's id and the id of the request that created it."""
    tokens = (job_id.set(job), request_id.set(request))
    try:
        yield
    finally:
        job_id.reset(tokens[0])
        request_id.reset(tokens[1])


def _install_record_factory() -> None:
    """Every record gets the ids at creation, whichever handler (or pytest's caplog) reads it."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "convertd", False):
        return

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        rid, jid = request_id.get(), job_id.get()
        if rid is not None:
            record.request_id = rid
        if jid is not None:
            record.job_id = jid
        return record

    factory.convertd = True  # type: ignore[attr-defined]  # a mark on the function: installed once
    logging.setLogRecordFactory(factory)


_install_record_factory()


def formatter() -> logging.Formatter:
    """JSON lines by default; CONVERTD_LOG_FORMAT=text for people reading a terminal."""
    if os.environ.get("CONVERTD_LOG_FORMAT", "json").lower() == "text":
        return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",  # ISO 8601 in UTC
        json_ensure_ascii=False,
    )


def configure(level: int = logging.INFO) -> None:
    """As logging.basicConfig: nothing changes when the root logger has handlers already
    (an embedding program's, or pytest's while the CLI runs inside a test)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter())
    root.addHandler(handler)
    root.setLevel(level)

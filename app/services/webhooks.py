"""Webhooks: a job that names a URL has its end POSTed there, signed, with retries.

The body is the job's status (as GET /v1/status shows it) plus an `event` name. It is signed
like Stripe's: `X-Convertd-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
keyed with the signing secret of the API key that created the job — the secret its owner
already holds for self-signed JWTs. Deliveries run on the job queue, so they survive a
restart and are retried with backoff; the outcome is kept on the job (`webhook_status`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

from app import metrics
from app.auth import crypto
from app.errors import ConvertdError, ErrorCode
from app.models import Job
from app.services import outbound
from app.services import status as status_service

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger(__name__)
ATTEMPTS = 6  # about a minute and a half in all with saq's exponential backoff from 2 s
TIMEOUT = 10  # seconds for one delivery


def check_url(url: str | None, *, allow_private: bool) -> str | None:
    """Refuse, before a job exists, a webhook URL that could never be delivered: not an
    absolute http(s) URL, or (unless the operator allows private addresses) one whose host
    is plainly private. A name is checked again when it is called (DNS can change)."""
    if url is None or not url.strip():
        return None
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2048:
        raise ConvertdError(
            ErrorCode.BAD_REQUEST,
            f"'{url[:100]}' is not a usable webhook URL.",
            hint="Give an absolute http:// or https:// URL of at most 2048 characters.",
            field="webhook_url",
        )
    if not allow_private and outbound.plainly_private(parts.hostname):
        raise ConvertdError(
            ErrorCode.BAD_REQUEST,
            f"The webhook URL's host {parts.hostname} is not on the public internet.",
            hint="Webhooks go to public addresses only; the server's operator can allow private "
            "ones with CONVERTD_ALLOW_PRIVATE_URLS=1.",
            field="webhook_url",
        )
    return url


def payload(rt: Runtime, job: Job) -> dict[str, Any]:
    """The event: the job's status body (services/status.py), as GET /v1/status shows it."""
    return {
        "event": f"job.{job.status.value}",
        **status_service.body(rt, job, job.public_base, delivery=False),
    }


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


async def enqueue(rt: Runtime, job: Job) -> None:
    await rt.queue.enqueue(
        "webhook",
        key=f"webhook:{job.id}",
        job_id=str(job.id),
        timeout=TIMEOUT * 2,
        retries=ATTEMPTS,
        retry_delay=2.0,
        retry_backoff=True,
    )


async def deliver(rt: Runtime, job_id: uuid.UUID, *, last_attempt: bool) -> str:
    """POST the job's end to its webhook once; raise to have the queue try again."""
    row = await rt.pool.fetchrow(
        "SELECT j.*, k.kid, k.webhook_secret_version FROM jobs j"
        " LEFT JOIN api_keys k ON k.id = j.api_key_id WHERE j.id = $1",
        job_id,
    )
    if row is None:  # deleted by its owner meanwhile (DELETE /v1/jobs/{id})
        return "job deleted"
    job = Job.from_row(row)
    assert job.webhook_url and job.terminal
    body = payload(rt, job)
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "X-Convertd-Event": body["event"],
               "User-Agent": "Convertd-Webhook/1"}  # fmt: skip
    if row["kid"] is not None:
        secret = crypto.webhook_secret(rt.settings.secret, row["kid"], row["webhook_secret_version"])
        headers["X-Convertd-Signature"] = sign(secret, int(time.time()), data)
    parts = urlsplit(job.webhook_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        http = await outbound.session(
            parts.hostname or "", port, allow_private=rt.settings.allow_private_urls, timeout=TIMEOUT
        )
        async with (
            http,
            http.post(job.webhook_url, data=data, headers=headers, allow_redirects=False) as resp,
        ):
            if resp.status >= 300:
                raise aiohttp.ClientResponseError(
                    resp.request_info, (), status=resp.status, message=resp.reason or ""
                )
    except outbound.Refused as exc:
        return await _record(rt, job_id, f"refused: {exc}")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        reason = f"failed: {getattr(exc, 'status', None) or type(exc).__name__}"
        if last_attempt:
            return await _record(rt, job_id, reason)
        await _record(rt, job_id, f"{reason}; retrying")
        raise
    return await _record(rt, job_id, "delivered")


async def _record(rt: Runtime, job_id: uuid.UUID, outcome: str) -> str:
    # a detail of delivery, not a change of the job: no version bump, no event
    metrics.webhook_outcome(outcome)
    await rt.pool.execute("UPDATE jobs SET webhook_status = $2 WHERE id = $1", job_id, outcome)
    return outcome

"""Resumable uploads, tus 1.0 (core, creation, termination, expiration).

An upload in progress is a row in tus_uploads (PostgreSQL: its offset is what HEAD reports
and what the next PATCH must start at) and a file of the bytes received so far under
<data dir>/tus/ on the API node that took the POST. A PATCH appends under an exclusive
flock on that file (so two PATCHes to one upload, in any process, never interleave) and
records the new offset whatever way the body ends: a connection dropped halfway keeps every
byte that arrived, and the client resumes from the offset HEAD then reports. When the
offset reaches Upload-Length the file becomes an ordinary upload through uploads.store (the
same size limits, quota and storage as a multipart upload) and the row keeps its file_path
until the upload expires. Expired rows and their bytes are swept (sweep_forever).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import fcntl
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from aiohttp.http_exceptions import HttpProcessingError

from app.errors import ConvertdError, ErrorCode
from app.services import storage_use, uploads
from app.storage import IncomingFile, safe_filename

if TYPE_CHECKING:
    from app.auth.principal import Principal
    from app.runtime import Runtime

log = logging.getLogger(__name__)

VERSION = "1.0.0"
EXTENSIONS = "creation,termination,expiration"
LOCK_WAIT = 10.0  # seconds a request waits for a PATCH in flight on the same upload
IDLE_TIMEOUT = 60.0  # seconds a PATCH body may stall before the server stops reading it
SWEEP_EVERY = 60.0  # seconds between sweeps of expired uploads
_ID = re.compile(r"[0-9a-f]{32}")
_ORPHAN_AGE = 3600  # seconds before a partial file with no row (another node's sweep) goes


@dataclasses.dataclass(frozen=True)
class TusUpload:
    id: str
    account_id: int
    upload_length: int
    upload_offset: int
    file_name: str
    content_type: str | None
    metadata: str | None
    created_at: datetime
    expires_at: datetime
    upload_id: int | None
    file_path: str | None

    @property
    def finished(self) -> bool:
        return self.file_path is not None

    @classmethod
    def from_row(cls, row: Any) -> TusUpload:
        return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls)})


def _error(code: ErrorCode, message: str, hint: str, **headers: str) -> ConvertdError:
    return ConvertdError(code, message, hint=hint, headers=headers)


def directory(rt: Runtime) -> Path:
    path = rt.settings.data_dir / "tus"
    path.mkdir(parents=True, exist_ok=True)
    return path


def partial_path(rt: Runtime, upload_id: str) -> Path:
    return directory(rt) / upload_id


def parse_metadata(header: str | None) -> dict[str, str]:
    """Upload-Metadata: comma-separated "key base64value" pairs (a value may be absent)."""
    out: dict[str, str] = {}
    for pair in (header or "").split(","):
        if not pair.strip():
            continue
        key, _, value = pair.strip().partition(" ")
        try:
            out[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8") if value else ""
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise _error(
                ErrorCode.BAD_REQUEST,
                f"Upload-Metadata value of '{key[:50]}' is not base64 of UTF-8 text.",
                'Send Upload-Metadata as "filename <base64 of the name>".',
            ) from exc
    return out


def _length(value: str | None, name: str) -> int:
    if value is None or not value.strip().isdigit():
        raise _error(
            ErrorCode.BAD_REQUEST,
            f"{name} must be a non-negative integer" + ("." if value is not None else ", and is missing."),
            f"Send {name} in bytes; deferred lengths (creation-defer-length) are not supported.",
        )
    return int(value.strip())


def max_size(rt: Runtime, principal: Principal) -> int:
    limit = principal.plan.max_file_size
    return rt.settings.max_upload_bytes if limit is None else min(limit, rt.settings.max_upload_bytes)


async def create(
    rt: Runtime, principal: Principal, upload_length: str | None, metadata: str | None
) -> TusUpload:
    """A new, empty upload of `upload_length` bytes, refused now if it could never be kept."""
    length = _length(upload_length, "Upload-Length")
    meta = parse_metadata(metadata)
    name = safe_filename(meta.get("filename") or meta.get("name") or "", "upload")
    if length > rt.settings.max_upload_bytes:
        raise _error(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"Upload-Length {length:,} is over the {rt.settings.max_upload_bytes:,} byte upload limit.",
            "Send a smaller file, or ask the operator to raise CONVERTD_MAX_UPLOAD_BYTES.",
            **{"Tus-Max-Size": str(max_size(rt, principal))},
        )
    # the plan's per-file limit, worded as for a multipart upload of this size
    uploads.check_size(rt, principal, [IncomingFile(Path(), name, length, None)])
    # the quota counts what this and the account's other unfinished uploads will store
    pending = await rt.pool.fetchval(
        "SELECT coalesce(sum(upload_length), 0)::bigint FROM tus_uploads"
        " WHERE account_id = $1 AND file_path IS NULL AND expires_at > now()",
        principal.account_id,
    )
    await storage_use.check_quota(rt, principal, length + pending)
    upload_id = secrets.token_hex(16)
    row = await rt.pool.fetchrow(
        "INSERT INTO tus_uploads (id, account_id, upload_length, file_name, content_type, metadata,"
        " expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
        upload_id,
        principal.account_id,
        length,
        name,
        meta.get("filetype") or meta.get("content_type") or meta.get("type") or None,
        metadata,
        datetime.now(UTC) + timedelta(seconds=rt.settings.tus_expiry),
    )
    partial_path(rt, upload_id).touch()
    created = TusUpload.from_row(row)
    if length == 0:  # nothing to send: finished at once
        return await _finish(rt, principal, created)
    return created


async def get(rt: Runtime, principal: Principal, upload_id: str) -> TusUpload:
    """The caller's upload; another account's is as unknown as a missing one (404)."""
    # only ids we make (hex) ever reach a query or, later, a file name under directory()
    known = _ID.fullmatch(upload_id) is not None
    row = known and await rt.pool.fetchrow(
        "SELECT * FROM tus_uploads WHERE id = $1 AND account_id = $2", upload_id, principal.account_id
    )
    if not row:
        raise _error(
            ErrorCode.NOT_FOUND,
            "Upload not found.",
            "Use the Location a POST to /v1/uploads/tus/ answered; you can only see your own uploads.",
        )
    upload = TusUpload.from_row(row)
    if upload.expires_at <= datetime.now(UTC):
        await _remove(rt, upload.id)
        raise _error(
            ErrorCode.GONE,
            "The upload expired and was removed.",
            "Start a new upload (POST /v1/uploads/tus/) and send it before Upload-Expires.",
        )
    return upload


async def current(rt: Runtime, principal: Principal, upload_id: str) -> TusUpload:
    """As get(), after any PATCH in flight on it has recorded its offset (for HEAD)."""
    await get(rt, principal, upload_id)
    with contextlib.suppress(FileNotFoundError, ConvertdError):
        async with _locked(rt, upload_id):
            pass
    return await get(rt, principal, upload_id)


@contextlib.asynccontextmanager
async def _locked(rt: Runtime, upload_id: str) -> AsyncIterator[IO[bytes]]:
    """The partial file, opened for writing under an exclusive flock (any process)."""
    try:
        fh = open(partial_path(rt, upload_id), "r+b")  # noqa: SIM115 - held across awaits
    except FileNotFoundError:
        raise _error(
            ErrorCode.NOT_FOUND,
            "This upload's received bytes are not on this server.",
            "Send every request of one upload to the same API node (sticky routing), "
            "or start the upload again.",
        ) from None
    with fh:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise _error(
                        ErrorCode.LOCKED,
                        "Another request is writing to this upload.",
                        "Send one PATCH at a time; HEAD tells the offset to resume from.",
                    ) from None
                await asyncio.sleep(0.05)
        yield fh  # closing the file releases the lock


async def append(
    rt: Runtime,
    principal: Principal,
    upload_id: str,
    upload_offset: str | None,
    content_length: int | None,
    chunks: AsyncIterator[bytes],
) -> TusUpload:
    """Write a PATCH body at the upload's offset; the offset sent must be the server's."""
    offset = _length(upload_offset, "Upload-Offset")
    await get(rt, principal, upload_id)
    async with _locked(rt, upload_id) as fh:
        upload = await get(rt, principal, upload_id)  # as the previous PATCH left it
        if offset != upload.upload_offset:
            raise _error(
                ErrorCode.OFFSET_MISMATCH,
                f"Upload-Offset {offset} is not the upload's offset {upload.upload_offset}.",
                "HEAD the upload and send the bytes from the Upload-Offset it reports.",
                **{"Upload-Offset": str(upload.upload_offset)},
            )
        if upload.finished:
            return upload
        room = upload.upload_length - offset
        if content_length is not None and content_length > room:
            raise _error(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"The body ({content_length:,} bytes) goes past Upload-Length "
                f"({upload.upload_length:,} bytes).",
                "Send at most Upload-Length minus Upload-Offset bytes.",
            )
        fh.seek(offset)
        fh.truncate()  # bytes past the recorded offset were never acknowledged
        error: ConvertdError | None = None
        try:
            error = await _write(fh, chunks, room)
        finally:
            fh.flush()
            # the offset recorded must be bytes that survive a crash of this machine
            await asyncio.to_thread(os.fsync, fh.fileno())
            # recorded even when the body broke off: that is what makes the upload resumable
            upload = await asyncio.shield(_record(rt, upload_id, fh.tell()))
        if error is not None:
            raise error
        if upload.upload_offset == upload.upload_length:
            return await _finish(rt, principal, upload)
        return upload


async def _write(fh: IO[bytes], chunks: AsyncIterator[bytes], room: int) -> ConvertdError | None:
    """Copy the body to the file, at most `room` bytes; the refusal to raise once the
    offset is recorded, if the body was too long or broke off."""
    written = 0
    iterator = aiter(chunks)
    try:
        while True:
            try:
                async with asyncio.timeout(IDLE_TIMEOUT):
                    chunk = await anext(iterator)
            except StopAsyncIteration:
                return None
            if written + len(chunk) > room:
                fh.write(chunk[: room - written])
                return _error(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    "The body goes past Upload-Length.",
                    "Send at most Upload-Length minus Upload-Offset bytes.",
                )
            fh.write(chunk)
            written += len(chunk)
    except (HttpProcessingError, ConnectionError, TimeoutError) as exc:
        # the client went away or stalled mid-body: keep what arrived, it resumes from there
        log.info("tus PATCH body broke off after %d bytes: %r", written, exc)
        return _error(
            ErrorCode.BAD_REQUEST,
            "The request body ended before its Content-Length.",
            "HEAD the upload and resume from the Upload-Offset it reports.",
        )


async def _record(rt: Runtime, upload_id: str, offset: int) -> TusUpload:
    row = await rt.pool.fetchrow(
        "UPDATE tus_uploads SET upload_offset = $2 WHERE id = $1 RETURNING *", upload_id, offset
    )
    if row is None:  # swept while this PATCH ran: it expired
        raise _error(
            ErrorCode.GONE,
            "The upload expired while it was being sent.",
            "Start a new upload (POST /v1/uploads/tus/) and send it before Upload-Expires.",
        )
    return TusUpload.from_row(row)


async def _finish(rt: Runtime, principal: Principal, upload: TusUpload) -> TusUpload:
    """All bytes are in: hand the file to uploads.store like a multipart file part."""
    incoming = IncomingFile(
        partial_path(rt, upload.id), upload.file_name, upload.upload_length, upload.content_type
    )
    stored = (await uploads.store(rt, principal, [incoming]))[0]
    row = await rt.pool.fetchrow(
        "UPDATE tus_uploads SET upload_id = $2, file_path = $3 WHERE id = $1 RETURNING *",
        upload.id,
        stored.id,
        stored.file_path,
    )
    # the bytes moved into storage; an empty file keeps the lock target for late requests
    partial_path(rt, upload.id).touch()
    return TusUpload.from_row(row)


async def terminate(rt: Runtime, principal: Principal, upload_id: str) -> None:
    """DELETE: the upload's received bytes and its record go (a finished upload's stored
    file stays: it is an ordinary upload by then, kept as the plan keeps uploads)."""
    await get(rt, principal, upload_id)
    with contextlib.suppress(FileNotFoundError):
        async with _locked(rt, upload_id):
            pass
    await _remove(rt, upload_id)


async def _remove(rt: Runtime, upload_id: str) -> None:
    await rt.pool.execute("DELETE FROM tus_uploads WHERE id = $1", upload_id)
    partial_path(rt, upload_id).unlink(missing_ok=True)


async def sweep(rt: Runtime) -> int:
    """Remove expired uploads (rows, and the bytes this node holds), and partial files whose
    row another node's sweep removed. Returns how many rows went."""
    gone = await rt.pool.fetch("DELETE FROM tus_uploads WHERE expires_at <= now() RETURNING id")
    for row in gone:
        partial_path(rt, row["id"]).unlink(missing_ok=True)
    known = {r["id"] for r in await rt.pool.fetch("SELECT id FROM tus_uploads")}
    cutoff = time.time() - _ORPHAN_AGE
    for path in directory(rt).iterdir():
        with contextlib.suppress(FileNotFoundError):
            if path.name not in known and path.stat().st_mtime < cutoff:
                path.unlink()
    return len(gone)


async def sweep_forever(rt: Runtime) -> None:
    while True:
        try:
            removed = await sweep(rt)
            if removed:
                log.info("removed %d expired resumable uploads", removed)
        except Exception:
            log.exception("sweeping expired resumable uploads failed; trying again later")
        await asyncio.sleep(SWEEP_EVERY)

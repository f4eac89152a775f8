"""An S3-compatible object store (AWS S3, MinIO, Ceph, R2, ...) through aiobotocore.

Uploads go up in parts read from the local spool, a few at a time, so the API's memory
stays flat whatever the file's size; downloads stream chunk by chunk. Credentials come the
standard AWS way (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an instance role).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from app.stores.base import FileStore, StoredObject

PART_SIZE = 8 * 1024 * 1024  # S3's smallest part is 5 MiB
MAX_PARTS = 10_000  # S3's cap on parts per upload: bigger files get bigger parts
PARTS_IN_FLIGHT = 4  # parts sent at once, each streamed from the spool (no part is held whole)
_CHUNK = 256 * 1024
_DELETE_BATCH = 1000  # keys per DeleteObjects request (S3's cap)
PRESIGN_SECONDS = 300  # a redirect is followed at once; the signed download_url lives longer


class S3Store(FileStore):
    kind = "object store"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        presign: bool = False,
    ) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.presign = presign
        self._endpoint_url = endpoint_url
        self._config = AioConfig(
            region_name=region or "us-east-1",
            signature_version="s3v4",
            # S3-compatible servers at their own address rarely have per-bucket DNS names
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            connect_timeout=5,
            read_timeout=60,
            # a few quick retries ride out a blip; an outage becomes a 503 within seconds
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=32,
        )
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def start(self) -> None:
        session = get_session()
        self._client = await self._stack.enter_async_context(
            session.create_client("s3", endpoint_url=self._endpoint_url, config=self._config)
        )

    async def close(self) -> None:
        await self._stack.aclose()

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def ping(self) -> None:
        await self._client.head_bucket(Bucket=self.bucket)

    def local_path(self, key: str) -> None:
        return None

    async def put(self, key: str, source: Path) -> None:
        size = source.stat().st_size
        if size <= PART_SIZE:
            with open(source, "rb") as fh:
                body = _Part(fh.fileno(), 0, size)
                await self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body)
        else:
            await self._put_parts(self._key(key), source, size)
        source.unlink(missing_ok=True)

    async def _put_parts(self, key: str, source: Path, size: int) -> None:
        part_size = max(PART_SIZE, -(-size // MAX_PARTS))
        created = await self._client.create_multipart_upload(Bucket=self.bucket, Key=key)
        upload_id = created["UploadId"]

        async def send(fd: int, number: int) -> dict[str, Any]:
            start = (number - 1) * part_size
            body = _Part(fd, start, min(part_size, size - start))
            sent = await self._client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )
            return {"PartNumber": number, "ETag": sent["ETag"]}

        parts: list[dict[str, Any]] = []
        pending: set[asyncio.Task[dict[str, Any]]] = set()
        with open(source, "rb") as fh:  # open until every part has been sent or cancelled
            try:
                # a sliding window of PARTS_IN_FLIGHT requests
                for number in range(1, -(-size // part_size) + 1):
                    if len(pending) >= PARTS_IN_FLIGHT:
                        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                        parts += [t.result() for t in done]  # the first failure raises here
                    pending.add(asyncio.create_task(send(fh.fileno(), number)))
                if pending:
                    done, pending = await asyncio.wait(pending)
                    parts += [t.result() for t in done]
                parts.sort(key=lambda p: p["PartNumber"])
                await self._client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
            except BaseException:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                # the parts sent so far would be stored (and billed) until aborted
                with contextlib.suppress(Exception):
                    await self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                raise

    async def fetch(self, key: str, folder: Path) -> Path:
        target = folder / Path(key).name
        folder.mkdir(parents=True, exist_ok=True)
        async with self.open(key) as obj:
            with open(target, "wb") as fh:
                async for chunk in obj.chunks:
                    await asyncio.to_thread(fh.write, chunk)
        return target

    @contextlib.asynccontextmanager
    async def open(self, key: str) -> AsyncIterator[StoredObject]:
        try:
            answer = await self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from exc
            raise
        async with answer["Body"] as body:
            yield StoredObject(int(answer["ContentLength"]), body.iter_chunks(_CHUNK))

    async def presigned_url(self, key: str, content_type: str, disposition: str, ttl: int) -> str | None:
        if not self.presign:
            return None
        url: str = await self._client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self._key(key),
                "ResponseContentDisposition": disposition,
                "ResponseContentType": content_type,
            },
            ExpiresIn=min(ttl, PRESIGN_SECONDS),
        )
        return url

    async def delete(self, keys: Iterable[str]) -> None:
        objects = [{"Key": self._key(k)} for k in keys]
        for start in range(0, len(objects), _DELETE_BATCH):
            answer = await self._client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": objects[start : start + _DELETE_BATCH], "Quiet": True}
            )
            failed = [e for e in answer.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if failed:
                raise RuntimeError(f"the object store kept {len(failed)} objects: {failed[0]}")


class _Part(io.RawIOBase):
    """One part of the spooled file, read in the client's own small chunks: the part is
    streamed, never held whole (bytes would be held twice, once more in the socket's buffer)."""

    def __init__(self, fd: int, start: int, length: int) -> None:
        self.fd, self.start, self.length, self.pos = fd, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.length}[whence]
        self.pos = min(max(base + offset, 0), self.length)
        return self.pos

    def read(self, size: int | None = -1) -> bytes:
        left = self.length - self.pos
        n = left if size is None or size < 0 else min(size, left)
        data = os.pread(self.fd, n, self.start + self.pos) if n else b""
        self.pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

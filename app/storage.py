"""Files: uploads streamed in, outputs stored, and signed download URLs.

The local spool, always on this machine's disk under the storage root:
  incoming/<random>             parts being received; claimed (stored) or deleted per request
  work/<job id>-<attempt>/      a conversion's private working directory
  work/<job id>-<attempt>.in/   its inputs fetched from a remote store
Kept in the file store (app/stores/: this directory by default, or an object store):
  uploads/<account>/<token>/<name>
  outputs/<account>/<job id>/<name>
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import os
import re
import secrets
import shutil
import time
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path

from app.errors import ConvertdError, ErrorCode
from app.stores import FileStore, LocalStore

_MULTI_EXT = ("tar.gz", "tar.bz2", "tar.xz", "tar.zst")
_CHUNK = 256 * 1024


def extension_of(name: str) -> str:
    lower = name.lower()
    for ext in _MULTI_EXT:
        if lower.endswith("." + ext):
            return ext
    return lower.rsplit(".", 1)[1] if "." in lower.strip(".") else ""


def safe_filename(name: str, default: str = "file") -> str:
    """A plain file name: no folders, no control or quoting characters, at most 150 chars."""
    name = unicodedata.normalize("NFC", name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r'[\x00-\x1f\x7f"<>:|?*;]', "", name)
    # format characters (category Cf: U+202E and the other bidi controls, zero-width ones)
    # make "evil\u202egpj.exe" display as "evilexe.jpg"
    name = "".join(c for c in name if unicodedata.category(c) != "Cf").strip().strip(".")
    if not name:
        return default
    if len(name) > 150:
        stem, dot, ext = name.rpartition(".")
        name = (stem[:140] + dot + ext[:9]) if dot and len(ext) <= 9 else name[:150]
    return name


@dataclasses.dataclass
class IncomingFile:
    """A received file part, on disk under incoming/ until a service claims it."""

    path: Path
    filename: str
    size: int
    content_type: str | None

    @property
    def extension(self) -> str:
        return extension_of(self.filename)


class Storage:
    """The spool on local disk, the file store behind it, and download signatures."""

    def __init__(self, root: Path, secret: str, files: FileStore | None = None) -> None:
        self.root = root
        self._secret = secret.encode()
        self.files = files or LocalStore(root)
        for sub in ("incoming", "work"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    async def start(self) -> None:
        await self.files.start()

    async def close(self) -> None:
        await self.files.close()

    def path(self, relative: str) -> Path:
        """A stored file's path, for a store on this machine (tests look at files this way)."""
        path = self.files.local_path(relative)
        assert path is not None, "the file store is not a local directory"
        return path

    async def receive(
        self, chunks: AsyncIterator[bytes], filename: str, content_type: str | None, limit: int
    ) -> IncomingFile:
        """Stream a part to disk, never holding it whole; 413 past `limit` bytes."""
        path = self.root / "incoming" / secrets.token_hex(16)
        size = 0
        try:
            with open(path, "wb") as fh:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise too_large(limit)
                    fh.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return IncomingFile(path, safe_filename(filename), size, content_type)

    def discard(self, files: list[IncomingFile]) -> None:
        for f in files:
            f.path.unlink(missing_ok=True)

    async def claim_upload(self, incoming: IncomingFile, account_id: int, token: str) -> str:
        """Move a received file into the store; its key (the upload's storage_path)."""
        relative = f"uploads/{account_id}/{token}/{incoming.filename}"
        await self.files.put(relative, incoming.path)
        return relative

    async def store_output(self, source: Path, account_id: int, job_id: str, name: str) -> str:
        relative = f"outputs/{account_id}/{job_id}/{name}"
        await self.files.put(relative, source)
        return relative

    async def chunks(self, key: str) -> AsyncIterator[bytes]:
        """A stored file's bytes, chunk by chunk, wherever it is kept."""
        async with self.files.open(key) as obj:
            async for chunk in obj.chunks:
                yield chunk

    @contextlib.asynccontextmanager
    async def readable(self, key: str) -> AsyncIterator[Path]:
        """A stored file as a local path for as long as the block runs (a remote store's
        object is downloaded into the spool, and deleted afterwards)."""
        folder = self.root / "incoming" / secrets.token_hex(16)
        try:
            yield await self.files.fetch(key, folder)
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)

    @contextlib.asynccontextmanager
    async def inputs(self, name: str, keys: list[str]) -> AsyncIterator[list[Path]]:
        """A job attempt's inputs as local files, in order (each in its own folder: two inputs
        may share a name); fetched copies are removed afterwards."""
        folder = self.root / "work" / f"{name}.in"
        await _remove_tree(folder)
        try:
            yield [await self.files.fetch(key, folder / str(i)) for i, key in enumerate(keys)]
        finally:
            await _remove_tree(folder)  # (only a remote store's copies are ever there)

    @contextlib.asynccontextmanager
    async def workdir(self, name: str) -> AsyncIterator[Path]:
        """A fresh private directory for one attempt at a job, removed afterwards (in a
        thread: deleting a tree is many system calls the event loop need not wait for)."""
        path = self.root / "work" / name
        await _remove_tree(path)  # what an earlier run of this attempt left
        path.mkdir(parents=True)
        try:
            yield path
        finally:
            await _remove_tree(path)

    # signed download URLs: a browser navigating to one cannot send an API key
    def sign(self, job_id: str, expires: int) -> str:
        msg = f"download:{job_id}:{expires}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def signed_query(self, job_id: str, ttl: int) -> str:
        expires = int(time.time()) + ttl
        return f"expires={expires}&signature={self.sign(job_id, expires)}"

    def verify(self, job_id: str, expires: str, signature: str) -> bool:
        try:
            when = int(expires)
        except ValueError:
            return False
        # bytes: compare_digest refuses non-ASCII str, and a tampered link must be a 403
        given = signature.encode("utf-8", "surrogateescape")
        return when >= time.time() and hmac.compare_digest(self.sign(job_id, when).encode(), given)


def too_large(limit: int) -> ConvertdError:
    return ConvertdError(
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"The file is larger than the {limit:,} byte upload limit.",
        hint="Send a smaller file, or ask the operator to raise CONVERTD_MAX_UPLOAD_BYTES.",
    )


async def _remove_tree(path: Path) -> None:
    """Remove a directory tree in a thread (many system calls the event loop need not
    wait for), or nothing when there is none (most often: no thread's round trip then)."""
    if os.path.lexists(path):
        await asyncio.to_thread(shutil.rmtree, path, ignore_errors=True)

"""Files in a local (or mounted) directory: the single-machine default."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from app.stores.base import FileStore, StoredObject

_CHUNK = 256 * 1024


class LocalStore(FileStore):
    kind = "local directory"

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("uploads", "outputs"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def local_path(self, key: str) -> Path:
        return self.root / key

    async def put(self, key: str, source: Path) -> None:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            # one filesystem: a rename, too quick to be worth a thread's round trip
            os.rename(source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # file:// points at another filesystem: a copy, in a thread
            await asyncio.to_thread(shutil.move, source, target)

    async def fetch(self, key: str, folder: Path) -> Path:
        path = self.root / key
        if not path.is_file():
            raise FileNotFoundError(key)
        return path  # the sandbox copies its inputs into the job's directory itself

    @contextlib.asynccontextmanager
    async def open(self, key: str) -> AsyncIterator[StoredObject]:
        fh = await asyncio.to_thread(open, self.root / key, "rb")

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await asyncio.to_thread(fh.read, _CHUNK):
                yield chunk

        try:
            yield StoredObject(os.fstat(fh.fileno()).st_size, chunks())
        finally:
            fh.close()

    async def delete(self, keys: Iterable[str]) -> None:
        folders = [(self.root / key).parent for key in keys]

        def remove() -> None:
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)

        await asyncio.to_thread(remove)

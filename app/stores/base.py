"""The interface every file store implements: put, fetch, read, sign, delete.

Keys are relative paths ("uploads/<account>/<token>/<name>", "outputs/<account>/<job>/<name>"),
the same strings the database keeps in `storage_path` and `output_path`.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterable
from pathlib import Path


@dataclasses.dataclass
class StoredObject:
    """An object opened for reading: its size and its bytes, chunk by chunk."""

    size: int
    chunks: AsyncIterator[bytes]


class FileStore(abc.ABC):
    """Uploads and outputs, wherever they live; the spool (incoming/, work/) stays local."""

    kind: str  # named in logs and errors

    async def start(self) -> None:
        """Open connections (a local directory has none)."""
        return None

    async def close(self) -> None:
        """Close them again."""
        return None

    async def ping(self) -> None:
        """Raise an outage error (app/outages.py) when the store cannot be reached."""
        return None

    @abc.abstractmethod
    async def put(self, key: str, source: Path) -> None:
        """Store the local file `source` under `key`; `source` is gone afterwards (moved or
        uploaded and deleted). Memory use does not grow with the file's size."""

    @abc.abstractmethod
    async def fetch(self, key: str, folder: Path) -> Path:
        """A local file with the object's bytes, to be read (never changed): the store's own
        file where it has one, else a copy downloaded into `folder` under the key's name."""

    @abc.abstractmethod
    def local_path(self, key: str) -> Path | None:
        """The object's own file, for stores that keep files on this machine (served with
        sendfile); None for remote stores."""

    @abc.abstractmethod
    def open(self, key: str) -> contextlib.AbstractAsyncContextManager[StoredObject]:
        """The object, streamed, for as long as the block runs (FileNotFoundError when absent)."""

    async def presigned_url(self, key: str, content_type: str, disposition: str, ttl: int) -> str | None:
        """A URL the client can download the object from directly, answering with these
        Content-Type and Content-Disposition headers; None: the API serves it itself."""
        return None

    @abc.abstractmethod
    async def delete(self, keys: Iterable[str]) -> None:
        """Delete objects (absent ones are not an error), and the folder each lived in for
        stores with folders: an upload's or a job's folder holds only that object."""

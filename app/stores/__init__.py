"""Where uploads and outputs live: a local directory or an S3-compatible object store.

`CONVERTD_STORAGE_URL` picks the backend (`open_store`); everything else talks to the
`FileStore` interface in base.py, never to a backend by name.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from app.stores.base import FileStore, StoredObject
from app.stores.local import LocalStore

__all__ = ["FileStore", "LocalStore", "StoredObject", "check_url", "open_store"]


def check_url(url: str | None) -> None:
    """Refuse (ValueError, saying what is expected) a storage URL that names no store."""
    if not url:
        return
    parts = urlsplit(url)
    if (parts.scheme == "file" and parts.path) or (parts.scheme == "s3" and parts.netloc):
        return
    raise ValueError(
        f"CONVERTD_STORAGE_URL={url!r} is not a storage URL: use file:///path/to/dir or "
        "s3://bucket[/prefix] (with CONVERTD_S3_ENDPOINT_URL for a store other than AWS)."
    )


def open_store(
    url: str | None,
    default_root: Path,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    presign: bool = False,
) -> FileStore:
    """The store a storage URL names: unset or file:///path, or s3://bucket[/prefix]."""
    check_url(url)
    if not url:
        return LocalStore(default_root)
    parts = urlsplit(url)
    if parts.scheme == "file":
        return LocalStore(Path(unquote(parts.path)))
    from app.stores.s3 import S3Store  # botocore loads only where an object store is used

    return S3Store(
        parts.netloc, parts.path.strip("/"), endpoint_url=endpoint_url, region=region, presign=presign
    )

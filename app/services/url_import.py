"""Inputs fetched from an http(s) URL the caller names, received like an uploaded file.

The fetch goes through app/services/outbound.py: the host is resolved once, every address
must be globally routable (unless CONVERTD_ALLOW_PRIVATE_URLS=1), and the connection goes to
those checked addresses only. Redirects are followed by hand, at most MAX_REDIRECTS, each new
location checked the same way. The body streams to disk through Storage.receive with the
smaller of the server's and the plan's file limit, so a large or endless answer costs no
memory and stops at the limit. What comes out is an ordinary IncomingFile: the same content
checks, limits and sandbox as a multipart upload apply to it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp

from app.errors import ConvertdError, ErrorCode
from app.services import outbound
from app.storage import IncomingFile, safe_filename
from converters.sniff import detect

if TYPE_CHECKING:
    from app.auth.principal import Principal
    from app.runtime import Runtime

MAX_REDIRECTS = 5
MAX_URL = 2048
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 256 * 1024
_GENERIC_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", "application/unknown"})


def _failed(message: str, hint: str) -> ConvertdError:
    return ConvertdError(ErrorCode.BAD_REQUEST, message, hint=hint, field="url")


def check_url(url: str) -> str:
    """The URL, stripped, if it is an absolute http(s) URL; else a 400 naming what is wrong."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > MAX_URL:
        raise _failed(
            f"'{url[:100]}' is not a URL the service can import from.",
            f"Give an absolute http:// or https:// URL of at most {MAX_URL} characters.",
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError as exc:
        raise _failed(f"'{url[:100]}' has an invalid port.", "Give a port between 1 and 65535.") from exc
    return url


def limit_for(rt: Runtime, principal: Principal) -> int:
    plan_limit = principal.plan.max_file_size
    server_limit = rt.settings.max_upload_bytes
    return server_limit if plan_limit is None else min(server_limit, plan_limit)


@contextlib.asynccontextmanager
async def imported(rt: Runtime, principal: Principal, url: str) -> AsyncIterator[IncomingFile]:
    """The URL's content as an IncomingFile; deleted afterwards unless a service claimed it."""
    incoming = await fetch(rt, principal, url)
    try:
        yield incoming
    finally:
        rt.storage.discard([incoming])


async def fetch(rt: Runtime, principal: Principal, url: str) -> IncomingFile:
    url = check_url(url)
    total = rt.settings.url_import_timeout
    try:
        async with asyncio.timeout(total):
            return await _follow(rt, principal, url)
    except TimeoutError as exc:
        raise _failed(
            f"Importing {url[:200]} timed out: it took over {total:g} s in all.",
            "The origin answered too slowly: try again, or upload the file instead.",
        ) from exc


async def _follow(rt: Runtime, principal: Principal, url: str) -> IncomingFile:
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            http = await outbound.session(
                parts.hostname or "",
                port,
                allow_private=rt.settings.allow_private_urls,
                timeout=rt.settings.url_import_timeout,
                connect=rt.settings.url_import_connect_timeout,
            )
        except outbound.Refused as exc:
            raise _failed(
                f"Refused to import from {parts.hostname}: {exc}.",
                "Only files on the public internet can be imported; an operator can allow "
                "private networks with CONVERTD_ALLOW_PRIVATE_URLS=1.",
            ) from exc
        try:
            async with (
                http,
                http.get(url, allow_redirects=False, headers={"User-Agent": "Convertd-Import/1"}) as resp,
            ):
                if resp.status in _REDIRECTS:
                    location = resp.headers.get("Location")
                    if not location:
                        raise _origin_status(url, resp.status, "a redirect without a Location")
                    url = check_url(urljoin(url, location))
                    continue
                if resp.status != 200:
                    raise _origin_status(url, resp.status, resp.reason or "")
                return await _receive(rt, principal, url, resp)
        except aiohttp.ClientError as exc:
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                raise _failed(
                    f"Importing {url[:200]} timed out: connecting to {parts.hostname} took over "
                    f"{rt.settings.url_import_connect_timeout:g} s.",
                    "The origin did not accept the connection: check the URL, or upload the file.",
                ) from exc
            if isinstance(exc, TimeoutError):
                raise  # the total deadline, below
            raise _failed(
                f"Could not import {url[:200]}: {type(exc).__name__}: {exc}.",
                "Check that the URL is reachable from the internet and serves the file.",
            ) from exc
    raise _failed(
        f"Importing the URL took more than {MAX_REDIRECTS} redirects.",
        "Give the file's final URL.",
    )


def _origin_status(url: str, status: int, reason: str) -> ConvertdError:
    return _failed(
        f"The origin answered HTTP {status} {reason} for {url[:200]}.".replace("  ", " "),
        "Check the URL in a browser; the file must be downloadable without logging in.",
    )


async def _receive(rt: Runtime, principal: Principal, url: str, resp: aiohttp.ClientResponse) -> IncomingFile:
    limit = limit_for(rt, principal)
    if resp.content_length is not None and resp.content_length > limit:
        raise _too_large(url, limit)
    content_type = resp.headers.get("Content-Type", "").split(";")[0].strip().lower() or None
    try:
        incoming = await rt.storage.receive(
            resp.content.iter_chunked(_CHUNK), _name(url, resp), content_type, limit
        )
    except ConvertdError as exc:
        if exc.code is ErrorCode.PAYLOAD_TOO_LARGE:
            raise _too_large(url, limit) from exc
        raise
    if not incoming.extension:
        # "https://host/photo?id=3": the format from the content, as an upload would declare it
        ext = await asyncio.to_thread(detect, incoming.path)
        if ext is None and content_type and content_type not in _GENERIC_TYPES:
            ext = (mimetypes.guess_extension(content_type) or "").lstrip(".") or None
        if ext:
            incoming.filename = safe_filename(f"{incoming.filename}.{ext}")
    return incoming


def _name(url: str, resp: aiohttp.ClientResponse) -> str:
    """Content-Disposition's file name, else the URL path's last segment, made safe."""
    disposition = resp.content_disposition
    if disposition is not None and disposition.filename:
        name = safe_filename(disposition.filename, "")
        if name:
            return name
    segment = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    return safe_filename(segment, "download")


def _too_large(url: str, limit: int) -> ConvertdError:
    return _failed(
        f"The file at {url[:200]} is larger than the {limit:,} byte limit.",
        "Import a smaller file, or move to a plan with a larger file limit.",
    )

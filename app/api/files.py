"""A stored output as an HTTP answer, whichever store keeps it (app/stores/).

A local file goes out with sendfile (ranges included); an object store's file is either
streamed through the API chunk by chunk, or, with CONVERTD_S3_PRESIGN=1, the answer is a
redirect to a short-lived presigned URL so the bytes do not pass through the API at all.
"""

from __future__ import annotations

import mimetypes
from urllib.parse import quote

from aiohttp import web

from app.errors import ConvertdError, ErrorCode
from app.runtime import Runtime
from app.services.job_reads import Download


def attachment(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


async def file_response(
    request: web.Request, rt: Runtime, result: Download, headers: dict[str, str] | None = None
) -> web.StreamResponse:
    content_type = mimetypes.guess_type(result.filename)[0] or "application/octet-stream"
    disposition = attachment(result.filename)
    own = {"X-Content-Type-Options": "nosniff", **(headers or {})}
    store = rt.storage.files
    path = store.local_path(result.key)
    if path is not None:
        return web.FileResponse(
            path, headers={"Content-Type": content_type, "Content-Disposition": disposition, **own}
        )
    url = await store.presigned_url(result.key, content_type, disposition, rt.settings.download_url_ttl)
    if url is not None:
        return web.Response(status=302, headers={"Location": url, "Cache-Control": "no-store", **own})
    try:
        async with store.open(result.key) as obj:
            response = web.StreamResponse(
                headers={"Content-Type": content_type, "Content-Disposition": disposition, **own}
            )
            response.content_length = obj.size
            await response.prepare(request)
            async for chunk in obj.chunks:
                await response.write(chunk)
            await response.write_eof()
            return response
    except FileNotFoundError as exc:
        raise ConvertdError(
            ErrorCode.GONE,
            "The job's output is no longer in storage.",
            hint="It was deleted (the job deleted or expired meanwhile); convert the file again.",
        ) from exc

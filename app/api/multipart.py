"""Multipart bodies read part by part: file parts go straight to disk, never into memory."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator

from aiohttp import BodyPartReader, web

from app.errors import ConvertdError, ErrorCode
from app.runtime import Runtime
from app.storage import IncomingFile

MAX_FIELD_BYTES = 1024 * 1024
_CHUNK = 256 * 1024


@dataclasses.dataclass
class Form:
    fields: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    files: dict[str, list[IncomingFile]] = dataclasses.field(default_factory=dict)

    def get(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None

    def all_files(self) -> list[IncomingFile]:
        return [f for group in self.files.values() for f in group]


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(_CHUNK):
        yield chunk


@contextlib.asynccontextmanager
async def read_form(request: web.Request, rt: Runtime) -> AsyncIterator[Form]:
    """Yield the form; files nobody claimed by the end are deleted."""
    if request.content_type == "application/x-www-form-urlencoded":
        posted = await request.post()  # bounded by client_max_size; no files in this encoding
        form = Form()
        for name, value in posted.items():
            form.fields.setdefault(name, []).append(str(value))
        yield form
        return
    if not request.content_type.startswith("multipart/"):
        raise ConvertdError(
            ErrorCode.BAD_REQUEST,
            "Expected a multipart/form-data body.",
            hint='Send the file as a multipart field, e.g. curl -F "file=@photo.png".',
        )
    form = Form()
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or not part.name:
                continue
            if part.filename is not None:
                incoming = await rt.storage.receive(
                    _chunks(part),
                    part.filename,
                    part.headers.get("Content-Type"),
                    rt.settings.max_upload_bytes,
                )
                form.files.setdefault(part.name, []).append(incoming)
            else:
                data = await part.read_chunk(MAX_FIELD_BYTES + 1)
                if len(data) > MAX_FIELD_BYTES or await part.read_chunk(1):
                    raise ConvertdError(
                        ErrorCode.PAYLOAD_TOO_LARGE,
                        f"The form field '{part.name}' is over {MAX_FIELD_BYTES:,} bytes.",
                        hint="Send files as file parts (with a filename), not as text fields.",
                    )
                text = data.decode(part.get_charset("utf-8"), "replace")
                form.fields.setdefault(part.name, []).append(text)
        yield form
    finally:
        rt.storage.discard(form.all_files())

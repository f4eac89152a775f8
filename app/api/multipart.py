"""Multipart bodies read part by part: file parts go straight to disk, never into memory."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator

from aiohttp import BodyPartReader, MultipartReader, hdrs, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import content_disposition_filename, parse_content_disposition

from app.errors import ConvertdError, ErrorCode
from app.runtime import Runtime
from app.storage import IncomingFile

# What one request may hold besides its files' bytes: enough for every documented form
# (a few fields, options as JSON, up to a hundred inputs), never enough to fill memory.
MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS_BYTES = 256 * 1024  # all text fields together
MAX_FIELDS = 64
MAX_FILES = 100
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
    if media_type(request) == "application/x-www-form-urlencoded":
        posted = await request.post()  # bounded by client_max_size; no files in this encoding
        form = Form()
        for name, value in posted.items():
            form.fields.setdefault(name, []).append(str(value))
        yield form
        return
    if not media_type(request).startswith("multipart/"):
        raise ConvertdError(
            ErrorCode.BAD_REQUEST,
            "Expected a multipart/form-data body.",
            hint='Send the file as a multipart field, e.g. curl -F "file=@photo.png".',
        )
    length = request.content_length
    limit = rt.settings.max_upload_bytes * MAX_FILES
    if length is not None and length > limit:
        raise _refused(f"The request is larger than {limit:,} bytes.")
    form = Form()
    text_bytes = 0
    try:
        try:
            reader = _reader(request)
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue
                field, filename = _names(part)
                if not field:
                    continue
                if filename is not None:
                    if len(form.all_files()) >= MAX_FILES:
                        raise _refused(f"A request may carry at most {MAX_FILES} files.")
                    incoming = await rt.storage.receive(
                        _chunks(part),
                        filename,
                        part.headers.get("Content-Type"),
                        rt.settings.max_upload_bytes,
                    )
                    form.files.setdefault(field, []).append(incoming)
                    continue
                if sum(len(v) for v in form.fields.values()) >= MAX_FIELDS:
                    raise _refused(f"A request may carry at most {MAX_FIELDS} text fields.")
                data = await _field(part)
                text_bytes += len(data)
                if text_bytes > MAX_FIELDS_BYTES:
                    raise _refused(f"The text fields together are over {MAX_FIELDS_BYTES:,} bytes.")
                text = data.decode(part.get_charset("utf-8"), "replace")
                form.fields.setdefault(field, []).append(text)
        except (HttpProcessingError, ValueError, LookupError, AssertionError, RuntimeError) as exc:
            # aiohttp's reader raises these on a body that does not follow the format
            raise ConvertdError(
                ErrorCode.BAD_REQUEST,
                "The multipart body is malformed.",
                hint="Send multipart/form-data as curl -F or a form library writes it.",
            ) from exc
        yield form
    finally:
        rt.storage.discard(form.all_files())


def media_type(request: web.BaseRequest) -> str:
    """The body's media type, lower case and without its parameters ("" when none was sent).

    aiohttp's `request.content_type` parses the header with the email package, ~1 ms of
    CPU a request: the largest single cost of a small convert's form on the API's loop."""
    return request.headers.get(hdrs.CONTENT_TYPE, "").partition(";")[0].strip().lower()


def _names(part: BodyPartReader) -> tuple[str | None, str | None]:
    """The part's field name and file name, from one parse of its Content-Disposition
    (aiohttp's `part.name` and `part.filename` parse it once each, ~0.2 ms a time)."""
    _, params = parse_content_disposition(part.headers.get(hdrs.CONTENT_DISPOSITION))
    return content_disposition_filename(params, "name"), content_disposition_filename(params, "filename")


def _reader(request: web.Request) -> MultipartReader:
    """The body's reader, with the boundary the body really uses.

    `curl -H "Content-Type: multipart/form-data; boundary=X" -F ...` (as in ConvertAPI's own
    examples) sends that header with curl's own boundary appended, and delimits the body with
    the latter: with several boundaries, the last one is the body's.
    """
    boundaries = parse_mimetype(request.headers[hdrs.CONTENT_TYPE]).parameters.getall("boundary", [])
    if len(boundaries) < 2:
        return MultipartReader(request.headers, request.content)
    content_type = f'{request.content_type}; boundary="{boundaries[-1]}"'
    return MultipartReader({hdrs.CONTENT_TYPE: content_type}, request.content)


async def _field(part: BodyPartReader) -> bytes:
    """A text field's bytes, refused as soon as it grows past MAX_FIELD_BYTES."""
    data = bytearray()
    while chunk := await part.read_chunk(_CHUNK):
        data += chunk
        if len(data) > MAX_FIELD_BYTES:
            raise _refused(
                f"The form field '{part.name}' is over {MAX_FIELD_BYTES:,} bytes.",
                "Send files as file parts (with a filename), not as text fields.",
            )
    return bytes(data)


def _refused(message: str, hint: str | None = None) -> ConvertdError:
    return ConvertdError(
        ErrorCode.PAYLOAD_TOO_LARGE,
        message,
        hint=hint
        or "Send fewer or smaller parts; several files can be uploaded first (/v1/upload) "
        "and converted by file_path.",
    )

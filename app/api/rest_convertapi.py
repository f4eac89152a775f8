"""ConvertAPI v2's protocol under /convertapi/, so its official SDKs work against Convertd.

Set the SDK's base URI to http://HOST/convertapi/ and its credentials to a Convertd API key,
JWT or access token. The routes are thin: the same services, access rules (operations.py
lists these routes under upload, convert and key info), rate limits and conversion quota
as /v1. Errors come in ConvertAPI's shape (app/api/convertapi_errors.py).

    POST /convertapi/upload                  raw body, Content-Disposition names the file
    POST /convertapi/convert/{src}/to/{dst}  form, multipart or JSON {"Parameters": [...]}
    GET  /convertapi/user                    the account and its conversions
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.multipart import content_disposition_filename, parse_content_disposition

from app.api.convertapi_errors import PREFIX
from app.api.multipart import MAX_FILES, Form, read_form
from app.api.request_context import base_url, runtime
from app.api.rest import json_body, principal
from app.auth.principal import Principal
from app.errors import ConvertdError, ErrorCode
from app.models import Job, JobStatus
from app.services import accounts, backpressure, jobs, retention, storage_use, uploads, url_import
from app.services import formats as formats_service
from app.services.links import links as job_links
from app.storage import IncomingFile, extension_of

routes = web.RouteTableDef()

# ConvertAPI's parameters that are not converter options (names case-insensitive)
_META = frozenset({"file", "files", "url", "storefile", "timeout", "filename"})
# credentials some clients put in the query string; never converter options
_CREDENTIALS = frozenset({"secret", "token", "api_key", "apikey", "jwt"})
_FILES_ITEM = re.compile(r"^files\[(\d+)\]$", re.IGNORECASE)
DEFAULT_TIMEOUT = 900  # ConvertAPI's default conversion timeout, in seconds
MAX_TIMEOUT = 3600
_CHUNK = 256 * 1024


def _bad(message: str, hint: str, name: str) -> ConvertdError:
    return ConvertdError(ErrorCode.BAD_REQUEST, message, hint, field=name)


@dataclass
class _Params:
    """A convert request's parameters: the named values and the file parts."""

    values: dict[str, tuple[str, Any]] = field(default_factory=dict)  # lower name -> (name, value)
    files: dict[str, list[IncomingFile]] = field(default_factory=dict)  # lower name -> parts

    def add(self, name: str, value: Any) -> None:
        self.values[name.lower()] = (name, value)

    def get(self, name: str) -> Any:
        found = self.values.get(name.lower())
        return None if found is None else found[1]


async def _from_json(rt: Any, body: Mapping[str, Any], params: _Params) -> None:
    """ConvertAPI's JSON body: {"Parameters": [{"Name", "Value"} | {"Name", "FileValue(s)"}]},
    a file value being {"Id"} (an upload or a result), {"Url"} or {"Name", "Data" (base64)}."""
    entries = body.get("Parameters")
    if not isinstance(entries, list):
        raise _bad(
            "A JSON body needs a 'Parameters' list.",
            'Send {"Parameters": [{"Name": "File", "FileValue": {"Id": "..."}}, ...]}, or a form.',
            "Parameters",
        )
    for entry in entries:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("Name"), str):
            raise _bad(
                "Each parameter needs a 'Name'.", 'e.g. {"Name": "Timeout", "Value": 60}', "Parameters"
            )
        name = entry["Name"]
        files = entry.get("FileValues") or ([entry["FileValue"]] if "FileValue" in entry else None)
        if files is None:
            params.add(name, entry.get("Value"))
            continue
        many = name.lower() == "files" or not isinstance(files, list) or len(files) > 1
        for i, value in enumerate(files if isinstance(files, list) else [files]):
            key = f"Files[{i}]" if many else name
            ref = value.get("Id") or value.get("Url") if isinstance(value, Mapping) else None
            if isinstance(ref, str):
                params.add(key, ref)
            elif isinstance(value, Mapping) and isinstance(value.get("Data"), str):
                params.files.setdefault(key.lower(), []).append(await _inline(rt, value, name))
            else:
                raise _bad(
                    f"'{name}': a file value needs an 'Id', a 'Url', or a 'Name' with base64 'Data'.",
                    "Upload the file first (POST /convertapi/upload) and pass its FileId as Id.",
                    name,
                )


async def _inline(rt: Any, value: Mapping[str, Any], name: str) -> IncomingFile:
    """A file sent inside the JSON body, base64: on disk like a file part."""
    try:
        data = base64.b64decode(value["Data"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad(
            f"'{name}': Data is not base64.", "Encode the file's bytes as standard base64.", name
        ) from exc
    filename = value.get("Name")
    if not isinstance(filename, str) or not filename.strip():
        raise _bad(f"'{name}': a file sent as Data needs its Name.", 'e.g. "Name": "photo.png"', name)

    async def one_chunk() -> AsyncIterator[bytes]:
        yield data

    received: IncomingFile = await rt.storage.receive(
        one_chunk(), filename, None, rt.settings.max_upload_bytes
    )
    return received


@contextlib.asynccontextmanager
async def _read(request: web.Request) -> AsyncIterator[_Params]:
    """Query, then body parameters (the body wins); file parts are deleted unless claimed."""
    params = _Params()
    for name, value in request.query.items():
        if name.lower() not in _CREDENTIALS:
            params.add(name, value)
    if request.content_type == "application/json":
        rt = runtime(request)
        try:
            await _from_json(rt, await json_body(request), params)
            yield params
        finally:
            rt.storage.discard([f for parts in params.files.values() for f in parts])
        return
    if not request.body_exists:
        yield params
        return
    form: Form
    async with read_form(request, runtime(request)) as form:
        for name, values in form.fields.items():
            params.add(name, values[-1])
        for name, parts in form.files.items():
            params.files.setdefault(name.lower(), []).extend(parts)
        yield params


@dataclass
class _Inputs:
    files: list[IncomingFile]
    file_paths: list[str]
    names: list[str]  # every input's file name, in order (for the format of "any")


async def _resolve(
    request: web.Request, who: Principal, params: _Params, stack: contextlib.AsyncExitStack
) -> _Inputs:
    """File, Files[i] (FileIds, URLs or file parts) and Url, in the order given; imported
    URLs live as long as `stack`."""
    refs: list[tuple[str, Any]] = []
    parts: list[IncomingFile] = [*params.files.get("file", []), *params.files.get("files", [])]
    indexed = sorted((int(m.group(1)), lower) for lower in params.files if (m := _FILES_ITEM.match(lower)))
    parts += [f for _, lower in indexed for f in params.files[lower]]
    for lower in ("file", "url"):
        if lower in params.values:
            refs.append(params.values[lower])
    items = sorted(
        (int(m.group(1)), v) for lower, v in params.values.items() if (m := _FILES_ITEM.match(lower))
    )
    refs += [v for _, v in items]
    if "files" in params.values:
        refs.append(params.values["files"])
    if not parts and not refs:
        raise _bad(
            "No input file.",
            "Pass File (a FileId from POST /convertapi/upload, or a file part), or Files[0], Files[1] ...",
            "File",
        )
    if len(parts) + len(refs) > MAX_FILES:  # a form-encoded body is not bounded by read_form's count
        raise _bad(
            f"A conversion takes at most {MAX_FILES} files.",
            "Split the files over several conversions.",
            "Files",
        )
    inputs = _Inputs(list(parts), [], [p.filename for p in parts])
    for name, ref in refs:
        if not isinstance(ref, str) or not ref.strip():
            raise _bad(f"'{name}' is empty.", "Pass a FileId from POST /convertapi/upload.", name)
        if re.match(r"^https?://", ref.strip(), re.IGNORECASE):
            # imported like /v1/convert's url (the same checks and limits); a result's Url
            # passed on to the next conversion (the SDKs' chaining) comes back here too
            fetched = await stack.enter_async_context(url_import.imported(runtime(request), who, ref))
            inputs.files.append(fetched)
            inputs.names.append(fetched.filename)
            continue
        if _is_uuid(ref):  # a result's FileId (its job): its output, copied in as an input
            copied = await stack.enter_async_context(_job_output(request, who, ref))
            inputs.files.append(copied)
            inputs.names.append(copied.filename)
            continue
        upload = await uploads.find_by_token(runtime(request), who, ref)
        inputs.file_paths.append(upload.file_path)
        inputs.names.append(upload.file_name)
    return inputs


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text.strip())
    except ValueError:
        return False
    return True


@contextlib.asynccontextmanager
async def _job_output(request: web.Request, who: Principal, job_id: str) -> AsyncIterator[IncomingFile]:
    """A finished job's output of the caller's, received like an upload (deleted unless claimed)."""
    rt = runtime(request)
    found = await jobs.download(rt, job_id.strip(), principal=who)

    incoming = await rt.storage.receive(
        rt.storage.chunks(found.key), found.filename, None, rt.settings.max_upload_bytes
    )
    try:
        yield incoming
    finally:
        rt.storage.discard([incoming])


def _coerce(value: Any, schema: Mapping[str, Any]) -> Any:
    """A form's text as the option's JSON type; left as it is when it does not parse, so the
    registry's validation refuses it with its own message."""
    if not isinstance(value, str):
        return value
    kind = schema.get("type")
    text = value.strip()
    with contextlib.suppress(ValueError):
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
    if kind == "boolean" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if kind == "array":
        return [] if not text else [_coerce(v, schema.get("items") or {}) for v in text.split(",")]
    return value


def _options(params: _Params, filetype: str, src: str, dst: str) -> dict[str, Any]:
    """The converter options among the parameters, matched to the pair's option names
    ignoring case and underscores (ConvertAPI writes Quality, Convertd quality)."""
    schema = formats_service.options_schema(filetype, src, dst)["properties"]
    by_key = {name.lower().replace("_", ""): name for name in schema}
    options: dict[str, Any] = {}
    for lower, (name, value) in params.values.items():
        if lower in _META or _FILES_ITEM.match(lower):
            continue
        option = by_key.get(lower.replace("_", ""), name)
        options[option] = _coerce(value, schema.get(option, {}))
    return options


def _flag(params: _Params, name: str, default: bool) -> bool:
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("true", "false", "1", "0"):
        return str(value).strip().lower() in ("true", "1")
    raise _bad(f"'{name}' must be true or false.", f"e.g. {name}=true", name)


def _timeout(params: _Params) -> float:
    value = params.get("Timeout")
    if value is None or value == "":
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = 0
    if not 1 <= seconds <= MAX_TIMEOUT:
        raise _bad(
            f"'Timeout' must be a number of seconds from 1 to {MAX_TIMEOUT}.",
            f"Leave it out for {DEFAULT_TIMEOUT} s.",
            "Timeout",
        )
    return seconds


@routes.post(PREFIX + "/upload")
async def upload(request: web.Request) -> web.Response:
    """The raw body is the file; its name comes from Content-Disposition (or ?filename=)."""
    who = await principal(request)
    rt = runtime(request)
    await storage_use.check_quota(rt, who, 0)  # an account at its quota: refused before the body
    name = _upload_name(request)
    incoming = await rt.storage.receive(
        request.content.iter_chunked(_CHUNK),
        name,
        request.headers.get("Content-Type"),
        rt.settings.max_upload_bytes,
    )
    try:
        [stored] = await uploads.store(rt, who, [incoming])
    finally:
        rt.storage.discard([incoming])  # gone already once claimed
    return web.json_response(
        {"FileId": stored.token, "FileName": stored.file_name, "FileExt": stored.extension}
    )


def _upload_name(request: web.Request) -> str:
    header = request.headers.get("Content-Disposition")
    name = None
    if header:
        _, disposition = parse_content_disposition(header)
        name = content_disposition_filename(disposition, "filename")
    name = name or request.query.get("filename") or request.query.get("FileName")
    if not name:
        raise _bad(
            "The upload has no file name.",
            "Send Content-Disposition: attachment; filename*=UTF-8''photo.png (or ?filename=photo.png).",
            "filename",
        )
    return name


@routes.post(PREFIX + "/convert/{src}/to/{dst}")
async def convert(request: web.Request) -> web.Response:
    """Convert, wait for the job(s) (up to Timeout), answer the files as ConvertAPI does."""
    who = await principal(request)
    rt = runtime(request)
    await backpressure.admit(rt, who)  # a full queue refuses before the body is read
    await storage_use.check_quota(rt, who, 0)
    src, dst = request.match_info["src"].lower(), request.match_info["dst"].lower()
    created: list[Job] = []
    async with _read(request) as params, contextlib.AsyncExitStack() as stack:
        # "any" (ConvertAPI's from-format for zip, and for mixed inputs): each file's extension
        declared = None if src in ("any", "*") else src
        if declared:  # an impossible pair is refused before any input is looked at
            formats_service.filetype_for(declared, dst)
        store, seconds = _flag(params, "StoreFile", False), _timeout(params)
        inputs = await _resolve(request, who, params, stack)
        first = declared or extension_of(inputs.names[0])
        filetype = formats_service.filetype_for(first, dst)
        options = _options(params, filetype, first, dst)
        common: dict[str, Any] = {
            "filetype": filetype,
            "output_format": dst,
            "options": options,
            "input_format": declared,
            "base_url": base_url(request),
        }
        try:
            if formats_service.takes_many(filetype, first, dst):
                created.append(
                    await jobs.convert(rt, who, files=inputs.files, file_paths=inputs.file_paths, **common)
                )
            else:  # a one-input converter: one job per file, every result in Files
                for f in inputs.files:
                    created.append(await jobs.convert(rt, who, files=[f], **common))
                for p in inputs.file_paths:
                    created.append(await jobs.convert(rt, who, file_paths=[p], **common))
        except BaseException:
            # one refused input refuses the request: the jobs of the others are withdrawn
            await _cancel(rt, who, created)
            raise
        out_name = params.get("FileName")
    ended = await asyncio.gather(*(jobs.settle(rt, who, job, seconds) for job in created))
    await _check_ended(rt, who, ended, seconds)
    files = [
        await _result_file(request, who, job, store, out_name, i, len(ended)) for i, job in enumerate(ended)
    ]
    return web.json_response({"ConversionCost": len(ended), "Files": files})


async def _cancel(rt: Any, who: Principal, created: list[Job]) -> None:
    """Stop jobs nobody will collect; cancelling refunds their conversions."""
    for job in created:
        with contextlib.suppress(ConvertdError):  # it may have ended meanwhile
            await jobs.cancel(rt, who, str(job.id))


async def _check_ended(rt: Any, who: Principal, ended: list[Job], seconds: float) -> None:
    late = [job for job in ended if not job.terminal]
    await _cancel(rt, who, late)  # nobody will collect them
    if late:
        raise ConvertdError(
            ErrorCode.CONVERSION_FAILED,
            f"The conversion did not finish within Timeout ({seconds:g} s); it was cancelled.",
            hint=f"Pass a larger Timeout (up to {MAX_TIMEOUT} s), or use /v1 or GraphQL and follow the job.",
            field="Timeout",
        )
    for job in ended:
        if job.status is JobStatus.FAILED:
            raise ConvertdError(
                ErrorCode.CONVERSION_FAILED,
                job.error or "The conversion failed.",
                hint=job.error_hint,
            )


async def _result_file(
    request: web.Request, who: Principal, job: Job, store: bool, out_name: Any, index: int, count: int
) -> dict[str, Any]:
    rt = runtime(request)
    name = job.output_name or "output"
    ext = extension_of(name)
    if isinstance(out_name, str) and out_name.strip():  # FileName: the result's name, no extension
        stem = out_name.strip() if count == 1 else f"{out_name.strip()}-{index + 1}"
        name = f"{stem}.{ext}" if ext else stem
    entry: dict[str, Any] = {
        "FileName": name,
        "FileExt": ext,
        "FileSize": job.output_size,
        "FileId": str(job.id),
    }
    if store:
        entry["Url"] = job_links(rt, job, base_url(request)).download_url
        return entry
    # StoreFile=false: the bytes in the answer, and nothing kept
    found = await jobs.download(rt, str(job.id), principal=who)
    data = b"".join([chunk async for chunk in rt.storage.chunks(found.key)])
    entry["FileData"] = base64.b64encode(data).decode()
    await retention.delete_job(rt, who, str(job.id))
    return entry


@routes.get(PREFIX + "/user")
async def user(request: web.Request) -> web.Response:
    """The account behind the credential, and its conversions (ConvertAPI's user info)."""
    who = await principal(request)
    account = await accounts.get_account(runtime(request).pool, who.account_id)
    return web.json_response(
        {
            "Id": account.id,
            "FullName": account.name,
            "Active": account.active,
            "Plan": account.plan.name,
            "ConversionsTotal": account.plan.conversions,
            "ConversionsConsumed": account.conversions_used,
            "ConversionsRemaining": account.conversions_remaining,
            "ApiKeyName": who.key.name if who.key else None,
        }
    )

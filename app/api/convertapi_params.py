"""ConvertAPI's request parameters read into what Convertd's services take.

A convert request names its values in the query, a form, multipart parts or a JSON body of
{"Parameters": [...]}, case-insensitively; its inputs are FileIds of uploads, results of
earlier conversions (the SDKs' chaining), URLs or inline base64 files. `read_params` collects
them, `resolve_inputs` turns File/Files[i]/Url into files and stored paths, and
`converter_options` picks the converter's options out of the rest (rest_convertapi.py uses them).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from app.api.multipart import MAX_FILES, Form, read_form
from app.api.request_context import runtime
from app.api.rest import json_body
from app.auth.principal import Principal
from app.errors import ConvertdError, ErrorCode
from app.services import formats as formats_service
from app.services import job_reads, uploads, url_import
from app.storage import IncomingFile

# ConvertAPI's parameters that are not converter options (names case-insensitive)
_META = frozenset({"file", "files", "url", "storefile", "timeout", "filename"})
# credentials some clients put in the query string; never converter options
_CREDENTIALS = frozenset({"secret", "token", "api_key", "apikey", "jwt"})
_FILES_ITEM = re.compile(r"^files\[(\d+)\]$", re.IGNORECASE)
DEFAULT_TIMEOUT = 900  # ConvertAPI's default conversion timeout, in seconds
MAX_TIMEOUT = 3600


def bad(message: str, hint: str, name: str) -> ConvertdError:
    return ConvertdError(ErrorCode.BAD_REQUEST, message, hint, field=name)


@dataclass
class Params:
    """A convert request's parameters: the named values and the file parts."""

    values: dict[str, tuple[str, Any]] = field(default_factory=dict)  # lower name -> (name, value)
    files: dict[str, list[IncomingFile]] = field(default_factory=dict)  # lower name -> parts

    def add(self, name: str, value: Any) -> None:
        self.values[name.lower()] = (name, value)

    def get(self, name: str) -> Any:
        found = self.values.get(name.lower())
        return None if found is None else found[1]


async def _from_json(rt: Any, body: Mapping[str, Any], params: Params) -> None:
    """ConvertAPI's JSON body: {"Parameters": [{"Name", "Value"} | {"Name", "FileValue(s)"}]},
    a file value being {"Id"} (an upload or a result), {"Url"} or {"Name", "Data" (base64)}."""
    entries = body.get("Parameters")
    if not isinstance(entries, list):
        raise bad(
            "A JSON body needs a 'Parameters' list.",
            'Send {"Parameters": [{"Name": "File", "FileValue": {"Id": "..."}}, ...]}, or a form.',
            "Parameters",
        )
    for entry in entries:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("Name"), str):
            raise bad("Each parameter needs a 'Name'.", 'e.g. {"Name": "Timeout", "Value": 60}', "Parameters")
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
                raise bad(
                    f"'{name}': a file value needs an 'Id', a 'Url', or a 'Name' with base64 'Data'.",
                    "Upload the file first (POST /convertapi/upload) and pass its FileId as Id.",
                    name,
                )


async def _inline(rt: Any, value: Mapping[str, Any], name: str) -> IncomingFile:
    """A file sent inside the JSON body, base64: on disk like a file part."""
    try:
        data = base64.b64decode(value["Data"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad(
            f"'{name}': Data is not base64.", "Encode the file's bytes as standard base64.", name
        ) from exc
    filename = value.get("Name")
    if not isinstance(filename, str) or not filename.strip():
        raise bad(f"'{name}': a file sent as Data needs its Name.", 'e.g. "Name": "photo.png"', name)

    async def one_chunk() -> AsyncIterator[bytes]:
        yield data

    received: IncomingFile = await rt.storage.receive(
        one_chunk(), filename, None, rt.settings.max_upload_bytes
    )
    return received


@contextlib.asynccontextmanager
async def read_params(request: web.Request) -> AsyncIterator[Params]:
    """Query, then body parameters (the body wins); file parts are deleted unless claimed."""
    params = Params()
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
class Inputs:
    files: list[IncomingFile]
    file_paths: list[str]
    names: list[str]  # every input's file name, in order (for the format of "any")


async def resolve_inputs(
    request: web.Request, who: Principal, params: Params, stack: contextlib.AsyncExitStack
) -> Inputs:
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
        raise bad(
            "No input file.",
            "Pass File (a FileId from POST /convertapi/upload, or a file part), or Files[0], Files[1] ...",
            "File",
        )
    if len(parts) + len(refs) > MAX_FILES:  # a form-encoded body is not bounded by read_form's count
        raise bad(
            f"A conversion takes at most {MAX_FILES} files.",
            "Split the files over several conversions.",
            "Files",
        )
    inputs = Inputs(list(parts), [], [p.filename for p in parts])
    for name, ref in refs:
        if not isinstance(ref, str) or not ref.strip():
            raise bad(f"'{name}' is empty.", "Pass a FileId from POST /convertapi/upload.", name)
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
    found = await job_reads.download(rt, job_id.strip(), principal=who)

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


def converter_options(params: Params, filetype: str, src: str, dst: str) -> dict[str, Any]:
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


def flag(params: Params, name: str, default: bool) -> bool:
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("true", "false", "1", "0"):
        return str(value).strip().lower() in ("true", "1")
    raise bad(f"'{name}' must be true or false.", f"e.g. {name}=true", name)


def timeout(params: Params) -> float:
    value = params.get("Timeout")
    if value is None or value == "":
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = 0
    if not 1 <= seconds <= MAX_TIMEOUT:
        raise bad(
            f"'Timeout' must be a number of seconds from 1 to {MAX_TIMEOUT}.",
            f"Leave it out for {DEFAULT_TIMEOUT} s.",
            "Timeout",
        )
    return seconds

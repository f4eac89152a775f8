"""The checks of a convert request, in the order a caller is told of them: nothing here
charges, stores or queues anything (app/services/jobs.py does, once these pass)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.errors import ConvertdError, ErrorCode
from app.services import uploads, webhooks
from app.services.formats import request_errors
from converters.base import ConversionError
from converters.registry import normalize_format, registry
from converters.sniff import check_declared

if TYPE_CHECKING:
    from app.auth.principal import Principal
    from app.models import Upload
    from app.runtime import Runtime
    from app.storage import IncomingFile

MAX_WAIT = 60  # seconds a synchronous convert may wait at most


@dataclasses.dataclass(frozen=True)
class Request:
    """A convert request that passed every check; nothing is charged or stored yet."""

    filetype: str
    output_format: str
    options: dict[str, Any]  # validated against the converter's schema, defaults filled in
    # each input's format, and where to read it: a file just received, or a stored upload's key
    inputs: list[tuple[str, Path | str]]
    stored: list[Upload]  # the earlier uploads it names (file_path)
    webhook_url: str | None
    wait: float  # seconds; 0 for an asynchronous convert


async def check(
    rt: Runtime,
    principal: Principal,
    *,
    filetype: str | None,
    output_format: str | None,
    options: object,
    files: Sequence[IncomingFile],
    file_paths: Sequence[str],
    input_format: str | None,
    webhook_url: str | None,
    wait: object,
) -> Request:
    """Refuse a request that cannot be converted, before anything is charged or stored."""
    seconds = wait_seconds(wait)
    webhook_url = webhooks.check_url(webhook_url, allow_private=rt.settings.allow_private_urls)
    filetype = required(filetype, "filetype", f"One of: {', '.join(registry().filetypes)}.")
    output_format = required(output_format, "output_format", "The target extension, e.g. webp.")
    values = parse_options(options)
    if not files and not file_paths:
        raise ConvertdError(
            ErrorCode.BAD_REQUEST,
            "No input file.",
            hint="Send the file as 'file', pass 'file_path' from an earlier upload, or 'url' to import.",
            field="file",
        )
    uploads.check_size(rt, principal, list(files))
    stored = [await uploads.find(rt, principal, p) for p in file_paths]
    inputs: list[tuple[str, Path | str]] = [
        (_format_of(f.filename, f.extension, input_format), f.path) for f in files
    ] + [(_format_of(u.file_name, u.extension, input_format), u.storage_path) for u in stored]
    values = await _check_conversion(rt, filetype, output_format, inputs, values)
    return Request(filetype, output_format, values, inputs, stored, webhook_url, seconds)


def check_before_input(rt: Runtime, asked: Mapping[str, Any]) -> None:
    """Refuse what needs no input to be refused (a URL import checks this before it
    downloads anything); `asked` holds check()'s keyword arguments."""
    wait_seconds(asked["wait"])
    webhooks.check_url(asked["webhook_url"], allow_private=rt.settings.allow_private_urls)
    required(asked["filetype"], "filetype", f"One of: {', '.join(registry().filetypes)}.")
    required(asked["output_format"], "output_format", "The target extension, e.g. webp.")
    parse_options(asked["options"])


def required(value: str | None, field: str, hint: str) -> str:
    if not value or not value.strip():
        raise ConvertdError(ErrorCode.BAD_REQUEST, f"'{field}' is required.", hint, field=field)
    return value.strip().lower()


def parse_options(options: object) -> dict[str, Any]:
    """The options as sent (a JSON text from a form, any JSON value from GraphQL) as a dict."""
    if options is None or options == "":
        return {}
    if isinstance(options, str):
        try:
            options = json.loads(options)
        except json.JSONDecodeError as exc:
            raise ConvertdError(
                ErrorCode.INVALID_OPTION,
                f"'options' is not valid JSON: {exc.msg} at character {exc.pos}.",
                hint='Send options as a JSON object, e.g. {"quality": 80}.',
                field="options",
            ) from exc
    if not isinstance(options, Mapping):
        raise ConvertdError(
            ErrorCode.INVALID_OPTION,
            "'options' must be a JSON object.",
            hint='e.g. {"quality": 80}',
            field="options",
        )
    return dict(options)


def wait_seconds(wait: object) -> float:
    if wait is None or wait == "":
        return 0.0
    try:
        seconds = float(str(wait))
    except ValueError:
        seconds = -1.0
    if not 1 <= seconds <= MAX_WAIT:
        raise ConvertdError(
            ErrorCode.BAD_REQUEST,
            f"'wait' must be a number of seconds from 1 to {MAX_WAIT}.",
            hint="Leave it out to get the job at once and follow it (events, jobUpdates).",
            field="wait",
        )
    return seconds


def _format_of(name: str, extension: str, override: str | None) -> str:
    fmt = normalize_format(override or extension)
    if not fmt:
        raise ConvertdError(
            ErrorCode.BAD_REQUEST,
            f"Cannot tell the format of '{name}': it has no extension.",
            hint="Name the file with its extension (photo.png) or pass input_format.",
            field="input_format",
        )
    return fmt


def _check_content(path: Path, fmt: str) -> None:
    try:
        check_declared(path, fmt)
    except ConversionError as exc:
        raise ConvertdError(ErrorCode.INVALID_FILE, exc.message, exc.hint, field="file") from exc


async def _check_conversion(
    rt: Runtime,
    filetype: str,
    output_format: str,
    inputs: list[tuple[str, Path | str]],
    options: dict[str, Any],
) -> dict[str, Any]:
    """Refuse what the converter cannot do with these inputs (formats that do not go
    together, several files for a one-input converter, content that is not its format);
    return the options validated against its schema, defaults filled in. An input is a file
    just received, or a stored upload's key (read through the file store)."""
    with request_errors():
        converter = registry().find(filetype, inputs[0][0], output_format)
        for fmt, _ in inputs[1:]:
            if registry().find(filetype, fmt, output_format) is not converter:
                raise ConvertdError(
                    ErrorCode.UNSUPPORTED_CONVERSION,
                    "These inputs cannot be combined into one output.",
                    hint="Send inputs of formats one converter reads together.",
                )
        values = registry().validate(filetype, inputs[0][0], output_format, options)
    if len(inputs) > 1 and not converter.multi_input:
        raise ConvertdError(
            ErrorCode.BAD_REQUEST,
            f"A {filetype} conversion to {output_format} takes one input file, not {len(inputs)}.",
            hint="Send one file per conversion.",
            field="file",
        )
    if not converter.content_agnostic:
        for fmt, where in inputs:
            if isinstance(where, Path):
                _check_content(where, fmt)
                continue
            async with rt.storage.readable(where) as path:
                _check_content(path, fmt)
    return values

"""What can be converted, from the converter registry."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from app.errors import ConvertdError, ErrorCode
from converters.base import RequestError
from converters.registry import registry


def formats() -> dict[str, dict[str, list[str]]]:
    return registry().formats()


def conversions(filetype: str) -> dict[str, dict[str, dict[str, Any]]]:
    return registry().conversions(filetype)


def pairs(filetype: str) -> dict[str, list[str]]:
    return registry().pairs(filetype)


def options_schema(filetype: str, input_format: str, output_format: str) -> dict[str, Any]:
    with request_errors():
        return registry().options_schema(filetype, input_format, output_format)


@contextlib.contextmanager
def request_errors() -> Iterator[None]:
    """Turn a converter RequestError into the service's 400."""
    try:
        yield
    except RequestError as exc:
        pair_fields = (None, "filetype", "input_format", "output_format")
        code = ErrorCode.UNSUPPORTED_CONVERSION if exc.field in pair_fields else ErrorCode.INVALID_OPTION
        raise ConvertdError(code, exc.message, exc.hint, field=exc.field) from exc

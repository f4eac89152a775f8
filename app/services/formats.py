"""What can be converted, from the converter registry."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from app.errors import ConvertdError, ErrorCode
from converters.base import RequestError
from converters.registry import normalize_format, registry


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


def filetype_for(input_format: str, output_format: str) -> str:
    """The filetype that turns one format into another (the ConvertAPI routes name only the
    pair); the first in name order when several do. 400 when none does."""
    src, dst = normalize_format(input_format), normalize_format(output_format)
    reg = registry()
    for filetype in reg.filetypes:
        if dst in reg.pairs(filetype).get(src, ()):
            return filetype
    targets = sorted({t for ft in reg.filetypes for t in reg.pairs(ft).get(src, ())})
    hint = f"'{src}' can become: {', '.join(targets)}." if targets else f"No converter reads '{src}'."
    raise ConvertdError(
        ErrorCode.UNSUPPORTED_CONVERSION,
        f"Convertd cannot convert '{src}' to '{dst}'.",
        hint=hint,
        field="output_format",
    )


def takes_many(filetype: str, input_format: str, output_format: str) -> bool:
    """Whether one job of this pair reads several inputs together (images -> one PDF)."""
    with request_errors():
        return registry().find(filetype, input_format, output_format).multi_input

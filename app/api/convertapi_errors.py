"""Errors in ConvertAPI's shape on the /convertapi/ routes: {Code, Message, InvalidParameters}.

The official SDKs read `Message`, `Code` and `InvalidParameters` (convertapi.ApiError). A
refused credential keeps its own code (CredentialCode, 4010-4014); every other error's code
is its HTTP status times ten (4000 bad parameters, 4040 not found, 4220 conversion failed,
4290 rate limited ...), the pattern of ConvertAPI's own codes. `Hint` is ours, and extra.
"""

from __future__ import annotations

from app.errors import ConvertdError

PREFIX = "/convertapi"


def is_convertapi(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def code(err: ConvertdError) -> int:
    return int(err.legacy_code) if err.legacy_code is not None else err.status * 10


def body(err: ConvertdError) -> dict[str, object]:
    return {
        "Code": code(err),
        "Message": err.message,
        "Hint": err.hint,
        "InvalidParameters": {err.field: [err.message]} if err.field else None,
        "ErrorCode": err.code.value,
    }

"""The one error type of the service, and the codes it carries on every transport.

REST renders it as {"error", "message", "hint"} with `status`; GraphQL as an error whose
extensions hold {code, status, hint}. Services raise it; no API handler builds its own.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class ErrorCode(enum.StrEnum):
    BAD_REQUEST = "BAD_REQUEST"
    UNSUPPORTED_CONVERSION = "UNSUPPORTED_CONVERSION"
    INVALID_OPTION = "INVALID_OPTION"
    INVALID_FILE = "INVALID_FILE"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    NOT_READY = "NOT_READY"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    RATE_LIMITED = "RATE_LIMITED"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    CONVERSION_FAILED = "CONVERSION_FAILED"
    HTTPS_REQUIRED = "HTTPS_REQUIRED"
    INTERNAL = "INTERNAL"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    # operations (app/services/retention.py, app/services/backpressure.py)
    GONE = "GONE"
    STORAGE_QUOTA_EXCEEDED = "STORAGE_QUOTA_EXCEEDED"
    TOO_MANY_PENDING = "TOO_MANY_PENDING"
    OVERLOADED = "OVERLOADED"
    # resumable uploads (tus 1.0, app/services/tus.py)
    OFFSET_MISMATCH = "OFFSET_MISMATCH"
    TUS_VERSION_UNSUPPORTED = "TUS_VERSION_UNSUPPORTED"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    LOCKED = "LOCKED"


class CredentialCode(enum.IntEnum):
    """ConvertAPI's numeric codes for a refused credential: `code` in REST error bodies,
    `legacyCode` in GraphQL's extensions, `Code` on the /convertapi/ routes."""

    INVALID_KEY = 4010  # an API key (or master token) that is unknown or revoked
    INVALID_ACCESS_TOKEN = 4011  # unknown, expired or used up
    INVALID_JWT = 4012  # bad signature, expired, unknown kid, wrong client IP
    MISSING = 4013  # no credential was sent
    ACCOUNT_INACTIVE = 4014


_STATUS_AND_NAME: dict[ErrorCode, tuple[int, str]] = {
    ErrorCode.BAD_REQUEST: (400, "Bad Request"),
    ErrorCode.UNSUPPORTED_CONVERSION: (400, "Unsupported Conversion"),
    ErrorCode.INVALID_OPTION: (400, "Invalid Option"),
    ErrorCode.INVALID_FILE: (400, "Invalid File"),
    ErrorCode.UNAUTHENTICATED: (401, "Unauthorized"),
    ErrorCode.FORBIDDEN: (403, "Forbidden"),
    ErrorCode.NOT_FOUND: (404, "Not Found"),
    ErrorCode.METHOD_NOT_ALLOWED: (405, "Method Not Allowed"),
    ErrorCode.NOT_READY: (409, "Conflict"),
    ErrorCode.PAYLOAD_TOO_LARGE: (413, "Payload Too Large"),
    ErrorCode.RATE_LIMITED: (429, "Too Many Requests"),
    ErrorCode.QUOTA_EXCEEDED: (403, "Quota Exceeded"),
    ErrorCode.CONVERSION_FAILED: (422, "Conversion Failed"),
    ErrorCode.HTTPS_REQUIRED: (403, "HTTPS Required"),
    ErrorCode.INTERNAL: (500, "Internal Server Error"),
    ErrorCode.SERVICE_UNAVAILABLE: (503, "Service Unavailable"),
    ErrorCode.GONE: (410, "Gone"),
    ErrorCode.STORAGE_QUOTA_EXCEEDED: (413, "Payload Too Large"),
    ErrorCode.TOO_MANY_PENDING: (429, "Too Many Requests"),
    ErrorCode.OVERLOADED: (503, "Service Unavailable"),
    ErrorCode.OFFSET_MISMATCH: (409, "Conflict"),
    ErrorCode.TUS_VERSION_UNSUPPORTED: (412, "Precondition Failed"),
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: (415, "Unsupported Media Type"),
    ErrorCode.LOCKED: (423, "Locked"),
}


class ConvertdError(Exception):
    def __init__(
        self,
        code: ErrorCode,
        message: str,
        hint: str | None = None,
        *,
        legacy_code: CredentialCode | None = None,  # ConvertAPI's numeric code, where it applies
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.legacy_code = legacy_code
        self.field = field
        self.headers = dict(headers or {})

    @property
    def status(self) -> int:
        return _STATUS_AND_NAME[self.code][0]

    @property
    def name(self) -> str:
        return _STATUS_AND_NAME[self.code][1]

    def body(self) -> dict[str, object]:
        """The REST error body of the SkyConvert document, plus our machine-readable code."""
        out: dict[str, object] = {
            "error": self.name,
            "message": self.message,
            "hint": self.hint,
            "error_code": self.code.value,
        }
        if self.legacy_code is not None:
            out["code"] = self.legacy_code
        if self.field is not None:
            out["field"] = self.field
        return out

    @property
    def extensions(self) -> dict[str, object]:
        """graphql-core copies an original error's `extensions` dict onto the GraphQL error."""
        out: dict[str, object] = {"code": self.code.value, "status": self.status, "hint": self.hint}
        if self.legacy_code is not None:
            out["legacyCode"] = self.legacy_code
        if self.field is not None:
            out["field"] = graphql_name(self.field)
        return out


def graphql_name(field: str) -> str:
    """A field as the GraphQL schema spells it: file_path -> filePath, ExpiresInSec -> expiresInSec."""
    head, *rest = field.split("_")
    return head[:1].lower() + head[1:] + "".join(part[:1].upper() + part[1:] for part in rest)


def not_found(what: str = "Job") -> ConvertdError:
    return ConvertdError(
        ErrorCode.NOT_FOUND,
        f"{what} not found.",
        hint=f"Check the {what.lower()} id; you can only see your own {what.lower()}s.",
    )

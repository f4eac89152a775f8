"""What authentication needs to know about a request, whatever the transport."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from aiohttp import web


@dataclasses.dataclass
class Trace:
    """Who a request turned out to be, filled in as authentication learns it, for the request log."""

    account_id: int | None = None
    api_key_id: int | None = None
    credential: str | None = None
    client_ip: str | None = None


@dataclasses.dataclass(frozen=True)
class RequestInfo:
    credential: str | None  # the API key, token or JWT as sent
    peer: str | None  # socket peer address
    headers: Mapping[str, str]
    endpoint: str  # REST path template or "graphql"
    secure: bool  # reached over TLS on our own socket
    trace: Trace = dataclasses.field(default_factory=Trace)
    in_url: bool = False  # the credential came in the query string (it ends up in logs)
    path: str | None = None  # the request's own path (an allowed_endpoints entry may name it)

    @property
    def origin(self) -> str | None:
        return self.headers.get("Origin")

    @property
    def referer(self) -> str | None:
        return self.headers.get("Referer")


def _bearer(value: str | None) -> str | None:
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return None


def _authentication(value: str | None) -> str | None:
    """ConvertAPI v1's own header, `Authentication:` (sic): "Bearer <token or JWT>" or
    "Basic <api_key> <secret>"; the credential is the last word (the secret, like ?Secret=)."""
    scheme, _, rest = (value or "").strip().partition(" ")
    words = rest.split()
    return words[-1] if scheme.lower() in ("bearer", "basic") and words else None


def credential_from(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """X-API-Key, Authorization: Bearer, ?api_key= (SkyConvert), ?Token= / ?Secret= and the
    Authentication header (ConvertAPI v1)."""
    return (
        headers.get("X-API-Key")
        or _bearer(headers.get("Authorization"))
        or _authentication(headers.get("Authentication"))
        or query.get("api_key")
        or query.get("Token")
        or query.get("token")
        or query.get("Secret")
        or query.get("secret")
        or None
    )


def from_http(request: web.Request, endpoint: str) -> RequestInfo:
    in_headers = credential_from(request.headers, {})
    return RequestInfo(
        credential=in_headers or credential_from({}, request.query),
        in_url=in_headers is None and credential_from({}, request.query) is not None,
        peer=request.transport.get_extra_info("peername")[0] if request.transport else None,
        headers=request.headers,
        endpoint=endpoint,
        secure=request.secure,
        path=request.path,
    )


def from_websocket(request: web.Request, params: Mapping[str, Any] | None) -> RequestInfo:
    """connection_init payload first (browsers cannot set headers on a websocket), then headers."""
    params = params if isinstance(params, Mapping) else {}
    lowered = {str(k).lower(): v for k, v in params.items()}
    payload_credential = (
        lowered.get("apikey")
        or lowered.get("api_key")
        or lowered.get("x-api-key")
        or _bearer(lowered.get("authorization"))
        or (lowered.get("token") if isinstance(lowered.get("token"), str) else None)
    )
    info = from_http(request, "graphql")
    credential = payload_credential if isinstance(payload_credential, str) else None
    if isinstance(credential, str) and credential:
        return dataclasses.replace(info, credential=credential, in_url=False)
    return info

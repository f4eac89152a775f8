"""What authentication needs to know about a request, whatever the transport."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from aiohttp import web


@dataclasses.dataclass(frozen=True)
class RequestInfo:
    credential: str | None  # the API key, token or JWT as sent
    peer: str | None  # socket peer address
    headers: Mapping[str, str]
    endpoint: str  # REST path template or "graphql"
    secure: bool  # reached over TLS

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


def credential_from(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """X-API-Key, then Authorization: Bearer, then ?api_key= (the SkyConvert document)."""
    return headers.get("X-API-Key") or _bearer(headers.get("Authorization")) or query.get("api_key") or None


def from_http(request: web.Request, endpoint: str) -> RequestInfo:
    return RequestInfo(
        credential=credential_from(request.headers, request.query),
        peer=request.transport.get_extra_info("peername")[0] if request.transport else None,
        headers=request.headers,
        endpoint=endpoint,
        secure=request.secure,
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
    return dataclasses.replace(info, credential=credential or info.credential)

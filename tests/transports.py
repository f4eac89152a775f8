"""One call on each transport (REST, GraphQL over HTTP, GraphQL websocket connection_init), as a
uniform outcome, so an access rule is tested the same way everywhere."""

from __future__ import annotations

import dataclasses
from typing import Any

import aiohttp

from tests.wsclient import connect

TRANSPORTS = ("rest", "graphql", "websocket")
QUOTA = "query Quota { quota { usedToday } }"


@dataclasses.dataclass
class Outcome:
    transport: str
    status: int  # HTTP status, or the error's extensions.status; 200 when accepted
    code: str | None  # error code (UNAUTHENTICATED, FORBIDDEN, ...)
    message: str | None
    hint: str | None
    legacy: int | None  # ConvertAPI v1 numeric code
    headers: dict[str, str]

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.code is None


def _headers(credential: str | None, headers: dict[str, str] | None) -> dict[str, str]:
    return {**({"Authorization": f"Bearer {credential}"} if credential else {}), **(headers or {})}


async def call(
    transport: str,
    http: aiohttp.ClientSession,
    base_url: str,
    credential: str | None,
    *,
    headers: dict[str, str] | None = None,
    path: str = "/v1/keys/me",
    document: str = QUOTA,
) -> Outcome:
    if transport == "rest":
        async with http.get(base_url + path, headers=_headers(credential, headers)) as resp:
            body = await resp.json()
            if resp.status == 200:
                return Outcome("rest", 200, None, None, None, None, dict(resp.headers))
            assert set(body) >= {"error", "message", "hint"}, body
            return Outcome(
                "rest",
                resp.status,
                body.get("error_code"),
                body["message"],
                body["hint"],
                body.get("code"),
                dict(resp.headers),
            )
    if transport == "graphql":
        async with http.post(
            f"{base_url}/graphql", json={"query": document}, headers=_headers(credential, headers)
        ) as resp:
            body = await resp.json()
            if not body.get("errors"):
                return Outcome("graphql", 200, None, None, None, None, dict(resp.headers))
            err = body["errors"][0]
            ext = err.get("extensions") or {}
            return Outcome(
                "graphql",
                ext.get("status", 0),
                ext.get("code"),
                err["message"],
                ext.get("hint"),
                ext.get("legacyCode"),
                dict(resp.headers),
            )
    # the legacy protocol carries the refusal's payload; graphql-transport-ws only closes with 4403
    payload: dict[str, Any] = {"Authorization": f"Bearer {credential}"} if credential else {}
    sub, reply = await connect(http, base_url, protocol="graphql-ws", payload=payload, headers=headers)
    await sub.ws.close()
    if reply["type"] == "connection_ack":
        return Outcome("websocket", 200, None, None, None, None, {})
    assert reply["type"] == "connection_error", reply
    p = reply["payload"]
    return Outcome("websocket", p["status"], p["code"], p["message"], p.get("hint"), p.get("legacyCode"), {})


async def everywhere(
    http: aiohttp.ClientSession, base_url: str, credential: str | None, **kwargs: Any
) -> list[Outcome]:
    return [await call(t, http, base_url, credential, **kwargs) for t in TRANSPORTS]

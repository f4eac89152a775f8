"""Minimal websocket GraphQL clients for both protocols, on aiohttp, speaking the raw messages."""

from __future__ import annotations

import json
from typing import Any

import aiohttp


class Subscription:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, protocol: str) -> None:
        self.ws, self.protocol = ws, protocol

    async def next_message(self, timeout: float = 30) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            return {"type": "closed", "code": self.ws.close_code, "reason": msg.extra}
        data = json.loads(msg.data)
        if data.get("type") in ("ping", "ka"):
            if data["type"] == "ping":
                await self.ws.send_json({"type": "pong"})
            return await self.next_message(timeout)
        return data

    async def results(self, timeout: float = 60) -> list[dict[str, Any]]:
        """Every payload until the server completes the subscription."""
        out = []
        while True:
            msg = await self.next_message(timeout)
            if msg["type"] in ("next", "data"):
                out.append(msg["payload"])
            elif msg["type"] == "complete":
                return out
            else:
                raise AssertionError(f"unexpected message {msg}")


async def connect(
    http: aiohttp.ClientSession,
    base_url: str,
    *,
    protocol: str = "graphql-transport-ws",
    payload: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[Subscription, dict[str, Any]]:
    ws = await http.ws_connect(f"{base_url}/graphql", protocols=[protocol], headers=headers or {})
    await ws.send_json({"type": "connection_init", "payload": payload or {}})
    sub = Subscription(ws, protocol)
    return sub, await sub.next_message()


async def subscribe(sub: Subscription, document: str, variables: dict[str, Any], op_id: str = "1") -> None:
    kind = "subscribe" if sub.protocol == "graphql-transport-ws" else "start"
    await sub.ws.send_json(
        {"id": op_id, "type": kind, "payload": {"query": document, "variables": variables}}
    )

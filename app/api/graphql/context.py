from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from app.auth.principal import Principal
from app.auth.request import RequestInfo, Trace
from app.errors import ConvertdError
from app.runtime import Runtime


@dataclasses.dataclass
class Context:
    request: web.Request
    response: web.StreamResponse
    rt: Runtime
    base_url: str
    connection_params: dict[str, Any] | None = None  # websocket connection_init payload
    trace: Trace = dataclasses.field(default_factory=Trace)  # who called, for the request log
    ws_info: RequestInfo | None = None  # the websocket's connection_init, re-admitted per operation
    _principal: Principal | None = None
    _auth_error: ConvertdError | None = None

    @property
    def transport(self) -> str:
        return "graphql-ws" if isinstance(self.response, web.WebSocketResponse) else "graphql"

    def authenticated(self, principal: Principal | None, error: ConvertdError | None) -> None:
        self._principal, self._auth_error = principal, error

    @property
    def principal_or_none(self) -> Principal | None:
        return self._principal

    @property
    def auth_error(self) -> ConvertdError | None:
        return self._auth_error

    @property
    def principal(self) -> Principal:
        """The caller; fields that need one raise the authentication error here."""
        if self._principal is None:
            assert self._auth_error is not None
            raise self._auth_error
        return self._principal

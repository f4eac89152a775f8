from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from app.auth.principal import Principal
from app.errors import ConvertdError
from app.runtime import Runtime


@dataclasses.dataclass
class Context:
    request: web.Request
    response: web.StreamResponse
    rt: Runtime
    base_url: str
    connection_params: dict[str, Any] | None = None  # websocket connection_init payload
    _principal: Principal | None = None
    _auth_error: ConvertdError | None = None

    def authenticated(self, principal: Principal | None, error: ConvertdError | None) -> None:
        self._principal, self._auth_error = principal, error

    @property
    def principal(self) -> Principal:
        """The caller; fields that need one raise the authentication error here."""
        if self._principal is None:
            assert self._auth_error is not None
            raise self._auth_error
        return self._principal

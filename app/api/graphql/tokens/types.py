from __future__ import annotations

from datetime import datetime

import strawberry


@strawberry.type(description="A JWT minted for one of your keys (HS256).")
class Jwt:
    token: str
    kid: str
    expires_at: datetime
    client_ip: str | None


@strawberry.type(description="An access token (ConvertAPI v1): each request spends one of requestCount.")
class AccessToken:
    id: str = strawberry.field(description="The token itself; shown only this once.")
    request_count: int
    valid_until: datetime

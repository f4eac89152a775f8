from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal

from app.models import ApiKey, Plan

if TYPE_CHECKING:
    from app.auth.ratelimit import RateState

Method = Literal["api_key", "jwt", "access_token", "master"]


@dataclasses.dataclass(frozen=True)
class Principal:
    """The authenticated caller: an account, its plan, and the credential it used."""

    account_id: int
    account_name: str
    plan: Plan
    method: Method
    key: ApiKey | None = None  # the key itself, or the key a JWT or access token was made from
    client_ip: str | None = None
    access_token_id: int | None = None
    jwt_claims: dict[str, Any] | None = None  # a v1 JWT's with a RequestCount: charge counts it
    rate: RateState | None = None  # the rate-limit windows after this call was counted

from __future__ import annotations

import dataclasses
from typing import Literal

from app.models import ApiKey, Plan

Method = Literal["api_key", "jwt", "access_token", "master"]


@dataclasses.dataclass(frozen=True)
class Principal:
    """The authenticated caller: an account, its plan, and the credential it used."""

    account_id: int
    account_name: str
    plan: Plan
    method: Method
    key: ApiKey | None = None

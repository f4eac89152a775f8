"""The caller's rate-limit quota, as GET /v1/keys/me's `rate_limits` shows it."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from app.auth import ratelimit

if TYPE_CHECKING:
    from app.auth.principal import Principal
    from app.runtime import Runtime


@dataclasses.dataclass(frozen=True)
class RateLimits:
    calls_per_day: int | None  # None: unlimited
    calls_per_minute: int | None
    used_today: int
    used_this_minute: int
    remaining_today: int | None

    def body(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


async def quota(rt: Runtime, principal: Principal) -> RateLimits:
    """The account's windows as they stand, this call included (limits are per account)."""
    plan = principal.plan
    state = await ratelimit.peek(
        rt.redis, f"account:{principal.account_id}", plan.calls_per_minute, plan.calls_per_day
    )
    return RateLimits(
        calls_per_day=plan.calls_per_day,
        calls_per_minute=plan.calls_per_minute,
        used_today=state.day.used,
        used_this_minute=state.minute.used,
        remaining_today=state.day.remaining,
    )

"""Plan rate limits in Redis: a rolling 60-second window and a day that ends at midnight UTC.

One Lua script reads both windows and counts the call only when both have room, so
concurrent calls can never overshoot a limit and a refused call spends nothing. Redis runs a
script atomically; that is the whole concurrency story (see docs/decisions.md for why not the
`limits` library).
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis.asyncio as aioredis

WINDOW_MS = 60_000

# KEYS[1]: sorted set of the calls in the rolling minute (score: ms); KEYS[2]: today's counter.
# ARGV: now_ms, per_minute (-1: unlimited), per_day (-1: unlimited), member, day_ttl_s, hit (1/0),
# cost (how many calls this one counts for: a GraphQL document with several root fields).
# Returns {refused (0 no, 1 minute, 2 day), used this minute, used today, ms when the minute
# window next has room (0: it has room), ms of the oldest call in the window (0: none)}.
_SCRIPT = """
local now = tonumber(ARGV[1])
local per_minute = tonumber(ARGV[2])
local per_day = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
local minute = redis.call('ZCARD', KEYS[1])
local day = tonumber(redis.call('GET', KEYS[2]) or '0')
local cost = tonumber(ARGV[7])
local refused = 0
if ARGV[6] == '1' then
  if per_day >= 0 and day + cost > per_day then
    refused = 2
  elseif per_minute >= 0 and minute + cost > per_minute then
    refused = 1
  else
    for i = 1, cost do
      redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. i)
    end
    redis.call('PEXPIRE', KEYS[1], 60000)
    minute = minute + cost
    day = redis.call('INCRBY', KEYS[2], cost)
    redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]))
  end
end
local frees_at = 0
if per_minute >= 0 and minute >= per_minute then
  if per_minute == 0 then
    frees_at = now + 60000
  else
    local entry = redis.call('ZRANGE', KEYS[1], minute - per_minute, minute - per_minute, 'WITHSCORES')
    if entry[2] then frees_at = tonumber(entry[2]) + 60000 end
  end
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {refused, minute, day, tostring(frees_at), tostring(oldest[2] or 0)}
"""


@dataclasses.dataclass(frozen=True)
class Window:
    limit: int | None  # None: unlimited
    used: int
    reset_at: float  # Unix time when `remaining` next grows

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(self.limit - self.used, 0)


@dataclasses.dataclass(frozen=True)
class RateState:
    minute: Window
    day: Window
    refused: str | None  # "minute" or "day" when the call was refused
    retry_after: int | None  # whole seconds, when refused

    @property
    def binding(self) -> Window | None:
        """The window the rate-limit headers describe: the refusing one, else the tighter one."""
        if self.refused:
            return self.minute if self.refused == "minute" else self.day
        limited = [w for w in (self.minute, self.day) if w.limit is not None]
        return min(limited, key=lambda w: w.remaining or 0) if limited else None

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        window = self.binding
        if window is not None:
            out["X-RateLimit-Limit"] = str(window.limit)
            out["X-RateLimit-Remaining"] = str(window.remaining)
            out["X-RateLimit-Reset"] = str(math.ceil(window.reset_at))
        if self.retry_after is not None:
            out["Retry-After"] = str(self.retry_after)
        return out


def next_midnight_utc(now: float) -> float:
    today = datetime.fromtimestamp(now, UTC).date()
    return datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC).timestamp()


def _keys(scope: str, now: float) -> list[str]:
    # the hash tag keeps both keys of a scope in one Redis Cluster slot, as a script needs
    day = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")
    return [f"convertd:rl:{{{scope}}}:minute", f"convertd:rl:{{{scope}}}:day:{day}"]


async def _run(
    redis: aioredis.Redis,
    scope: str,
    per_minute: int | None,
    per_day: int | None,
    *,
    hit: bool,
    now: float | None = None,
    cost: int = 1,
) -> RateState:
    now = time.time() if now is None else now
    now_ms = int(now * 1000)
    midnight = next_midnight_utc(now)
    script = redis.register_script(_SCRIPT)
    refused, minute, day, frees_at, oldest = await script(
        keys=_keys(scope, now),
        args=[
            now_ms,
            -1 if per_minute is None else per_minute,
            -1 if per_day is None else per_day,
            f"{now_ms}-{secrets.token_hex(6)}",
            # kept an hour past midnight so a call at 23:59:59 still reads its own day
            int(midnight - now) + 3600,
            1 if hit else 0,
            max(cost, 1),
        ],
    )
    frees_ms, oldest_ms = float(frees_at), float(oldest)
    minute_reset = (frees_ms or ((oldest_ms + WINDOW_MS) if oldest_ms else now_ms)) / 1000
    state = RateState(
        minute=Window(per_minute, int(minute), minute_reset),
        day=Window(per_day, int(day), midnight),
        refused={1: "minute", 2: "day"}.get(int(refused)),
        retry_after=None,
    )
    if state.refused:
        until = midnight if state.refused == "day" else minute_reset
        state = dataclasses.replace(state, retry_after=max(1, math.ceil(until - now)))
    return state


async def hit(
    redis: aioredis.Redis,
    scope: str,
    per_minute: int | None,
    per_day: int | None,
    *,
    now: float | None = None,
    cost: int = 1,
) -> RateState:
    """Count `cost` calls if both windows have room for all; `refused` says which had none."""
    return await _run(redis, scope, per_minute, per_day, hit=True, now=now, cost=cost)


async def peek(
    redis: aioredis.Redis,
    scope: str,
    per_minute: int | None,
    per_day: int | None,
    *,
    now: float | None = None,
) -> RateState:
    """The windows as they stand, counting nothing."""
    return await _run(redis, scope, per_minute, per_day, hit=False, now=now)

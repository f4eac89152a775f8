"""Fair dispatch between accounts on top of saq's Redis queue.

saq hands out jobs first in, first out from one Redis list, so one account's batch holds
every other account's jobs behind it. saq's own answer (`group_key`) exists only on its
PostgreSQL queue and is a cap of one, not round-robin. So the queue here is saq's, with its
heartbeats, sweeps, retries and aborts, plus one rule about what enters saq's list:

    each account has at most one job in saq's list (its "ready" job); the rest wait in
    the account's own list in Redis, in order, and also while the account runs its cap.

saq's list is then a ring of accounts: when a worker takes an account's ready job, the
account's next job goes to the END of saq's list, behind every other account's ready job,
which is round-robin between accounts with jobs queued, first in first out within one.
An account with nothing running (typically one that just submitted a job while another
floods the queue) has its ready job placed ahead of the busy accounts' (behind other such
accounts'), so it starts in the first worker slot that frees.
Everything happens in Lua scripts, atomically in Redis, so any number of workers on any
number of machines share one order; workers still block on saq's list (BLMOVE), so a job
is taken the moment it is ready, with no polling. The move that hands the next job over
runs in the same round trip that reads the taken job, so one account's flood costs what it
did with plain FIFO.

A job is "running" for the cap from the moment a worker takes it from saq's list until saq
finishes it, retries it or sweeps it as its worker died (all of which pass through the
methods below), so a dead worker's slot is given back when saq sweeps its job.

Redis keys, beside saq's under saq:<queue>:fair:
    cap              hash  account -> most jobs running at once (absent: unlimited)
    ready            hash  account -> its job in saq's queued list
    taking           list  jobs a worker is moving from saq's queued list to its active one
    waiting          set   accounts with jobs in their wait list
    wait:<account>   list  the account's jobs not yet handed to saq, in order
    run:<account>    set   the account's jobs taken by a worker and not finished
"""

from __future__ import annotations

import logging
import typing as t

from saq.job import Job, Status
from saq.queue.redis import RedisQueue

log = logging.getLogger(__name__)

# Hands the account its next job when it has none in saq's list and is below its cap.
# A cap that looks reached is checked against saq's own record of each job first: a job
# swept because its data vanished, or finished by a worker that died before telling us,
# must not hold a slot forever.
_FILL = """
local function ended(id)
    local data = redis.call('GET', id)
    if not data then return true end
    local status = cjson.decode(data).status
    return status == 'complete' or status == 'failed' or status == 'aborted'
end

local function fill(p, acct)
    if redis.call('HEXISTS', p .. ':ready', acct) == 1 then return end
    local wait = p .. ':wait:' .. acct
    if redis.call('LLEN', wait) == 0 then
        redis.call('SREM', p .. ':waiting', acct)
        return
    end
    local cap = tonumber(redis.call('HGET', p .. ':cap', acct) or '-1')
    if cap >= 0 then
        local run = p .. ':run:' .. acct
        if redis.call('SCARD', run) >= cap then
            for _, id in ipairs(redis.call('SMEMBERS', run)) do
                if ended(id) then redis.call('SREM', run, id) end
            end
            if redis.call('SCARD', run) >= cap then return end
        end
    end
    local id = redis.call('LPOP', wait)
    redis.call('HSET', p .. ':ready', acct, id)
    if redis.call('SCARD', p .. ':run:' .. acct) > 0 then
        redis.call('RPUSH', QUEUED, id)
        return
    end
    -- nothing of the account's running: ahead of the busy accounts, behind other idle ones
    local last = redis.call('GET', p .. ':idle-last')
    if not last or redis.call('LINSERT', QUEUED, 'AFTER', last, id) <= 0 then
        redis.call('LPUSH', QUEUED, id)
    end
    redis.call('SET', p .. ':idle-last', id)
end
"""

# KEYS: incomplete, job id, queued, abort id, active; ARGV: job, prefix, account, cap
_ENQUEUE = (
    "local QUEUED, ACTIVE = KEYS[3], KEYS[5]\n"
    + _FILL
    + """
if redis.call('ZSCORE', KEYS[1], KEYS[2]) or redis.call('EXISTS', KEYS[4]) == 1 then
    return nil
end
local p, acct = ARGV[2], ARGV[3]
redis.call('SET', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], 0, KEYS[2])
if ARGV[4] == '' then
    redis.call('HDEL', p .. ':cap', acct)
else
    redis.call('HSET', p .. ':cap', acct, ARGV[4])
end
-- queued again by reconcile (Redis lost it, or its sweeper died): it holds no slot now
redis.call('SREM', p .. ':run:' .. acct, KEYS[2])
redis.call('RPUSH', p .. ':wait:' .. acct, KEYS[2])
redis.call('SADD', p .. ':waiting', acct)
fill(p, acct)
return 1
"""
)

# A worker took a job from saq's list into `taking`. KEYS: queued, active, taking; ARGV:
# prefix, job id. The job moves on to saq's active list marked active, in one step: saq's
# sweep takes a job in its active list that still says "queued" for one whose worker died,
# and a sweep running between saq's BLMOVE and its status write (always so when a worker
# starts with jobs queued) aborted a job that was only being started.
# Returns the job's data as it was (saq counts the attempt in memory) and whether it was
# marked active here, with its attempt counted (then saq's own write of the same is
# skipped), so taking a job stays one round trip after the BLMOVE.
_TAKEN = (
    "local QUEUED, ACTIVE = KEYS[1], KEYS[2]\n"
    + _FILL
    + """
local p, id = ARGV[1], ARGV[2]
-- not in `taking` any more: reconcile took it for stranded and put it back in saq's list
if redis.call('LREM', KEYS[3], 1, id) == 0 then return nil end
local data = redis.call('GET', id)
if not data then return nil end
redis.call('RPUSH', ACTIVE, id)
local job = cjson.decode(data)
local marked = 0
if job.status == 'queued' then
    local now = redis.call('TIME')
    job.status = 'active'
    job.touched = now[1] * 1000 + math.floor(now[2] / 1000)
    job.started = job.touched
    job.attempts = (job.attempts or 0) + 1
    redis.call('SET', id, cjson.encode(job))
    marked = 1
end
local acct = job.group_key
if acct and acct ~= cjson.null then
    if redis.call('HGET', p .. ':ready', acct) == id then redis.call('HDEL', p .. ':ready', acct) end
    redis.call('SADD', p .. ':run:' .. acct, id)
    fill(p, acct)
end
return {data, marked}
"""
)

# A job left the queue for good (finished, failed, aborted): what saq's finish does (off its
# lists, the record kept for `ttl` seconds: 0 for ever, below 0 not at all), and its slot
# given back, and saq's notice of the new status (its `notify`) published, in one round
# trip. KEYS: queued, active, incomplete, job id; ARGV: prefix, account, job data, ttl, status.
_FINISHED = (
    "local QUEUED, ACTIVE = KEYS[1], KEYS[2]\n"
    + _FILL
    + """
local p, id, acct, ttl = ARGV[1], KEYS[4], ARGV[2], tonumber(ARGV[4])
redis.call('LREM', ACTIVE, 1, id)
redis.call('ZREM', KEYS[3], id)
if ttl > 0 then
    redis.call('SETEX', id, ttl, ARGV[3])
elseif ttl == 0 then
    redis.call('SET', id, ARGV[3])
else
    redis.call('DEL', id)
end
redis.call('SREM', p .. ':run:' .. acct, id)
if redis.call('HGET', p .. ':ready', acct) == id then
    redis.call('HDEL', p .. ':ready', acct)
    redis.call('LREM', QUEUED, 0, id)
end
redis.call('LREM', p .. ':wait:' .. acct, 0, id)
fill(p, acct)
redis.call('PUBLISH', id, ARGV[5])
return 1
"""
)

# saq retries a job (its worker died or stopped): it goes back to the head of its account's
# wait list, not straight into saq's list, so the cap holds for retried jobs too.
# KEYS: queued, active, incomplete, job id; ARGV: prefix, job data, account.
_RETRY = (
    "local QUEUED, ACTIVE = KEYS[1], KEYS[2]\n"
    + _FILL
    + """
local p, id = ARGV[1], KEYS[4]
redis.call('LREM', ACTIVE, 1, id)
redis.call('LREM', QUEUED, 1, id)
redis.call('ZADD', KEYS[3], 0, id)
redis.call('SET', id, ARGV[2])
local acct = ARGV[3]
redis.call('SREM', p .. ':run:' .. acct, id)
if redis.call('HGET', p .. ':ready', acct) == id then redis.call('HDEL', p .. ':ready', acct) end
local wait = p .. ':wait:' .. acct
redis.call('LREM', wait, 0, id)
redis.call('LPUSH', wait, id)
redis.call('SADD', p .. ':waiting', acct)
fill(p, acct)
return 1
"""
)

# Takes a job that is still in its account's wait list out of it (a cancel).
_WITHDRAW = "return redis.call('LREM', KEYS[1], 0, ARGV[1])"

# Where a queued job stands: {jobs of its account ahead of it, running, cap or -1}, or nil
# when it is not queued (running, ended, or not dispatched fairly). ARGV: prefix, id, account.
_POSITION = """
local p, id, acct = ARGV[1], ARGV[2], ARGV[3]
local running = redis.call('SCARD', p .. ':run:' .. acct)
local cap = tonumber(redis.call('HGET', p .. ':cap', acct) or '-1')
local ready = redis.call('HGET', p .. ':ready', acct)
if ready == id then return {0, running, cap} end
local pos = redis.call('LPOS', p .. ':wait:' .. acct, id)
if not pos then return nil end
return {pos + (ready and 1 or 0), running, cap}
"""

# Every account with waiting jobs gets a fill, with caps refreshed from the plans (ARGV:
# prefix, then account, cap pairs; '' is unlimited). Repairs what a worker dying between two
# steps left: a job in `taking` now and at a previous run at least 10 s ago (taking lasts
# one round trip) goes back to the front of saq's list; a ready entry whose job is in none
# of saq's lists nor `taking` is dropped. KEYS: queued, active, taking.
_REFILL = (
    "local QUEUED, ACTIVE = KEYS[1], KEYS[2]\n"
    + _FILL
    + """
local p = ARGV[1]
local seen, seen_at = p .. ':taking-seen', p .. ':taking-seen-at'
local now = tonumber(redis.call('TIME')[1])
-- runs close together (workers starting at once) must not take a take in progress for
-- a stranded one: compare with a look at least 10 seconds old
if now - tonumber(redis.call('GET', seen_at) or '0') >= 10 then
    for _, id in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
        if redis.call('SISMEMBER', seen, id) == 1 then
            redis.call('LREM', KEYS[3], 0, id)
            redis.call('LPUSH', QUEUED, id)
        end
    end
    redis.call('DEL', seen)
    for _, id in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do redis.call('SADD', seen, id) end
    redis.call('SET', seen_at, now)
end
for i = 2, #ARGV, 2 do
    if ARGV[i + 1] == '' then
        redis.call('HDEL', p .. ':cap', ARGV[i])
    else
        redis.call('HSET', p .. ':cap', ARGV[i], ARGV[i + 1])
    end
end
local ready = redis.call('HGETALL', p .. ':ready')
for i = 1, #ready, 2 do
    local id = ready[i + 1]
    local listed = redis.call('LPOS', QUEUED, id) or redis.call('LPOS', KEYS[3], id)
    if not listed and not redis.call('LPOS', ACTIVE, id) then
        redis.call('HDEL', p .. ':ready', ready[i])
    end
end
for _, acct in ipairs(redis.call('SMEMBERS', p .. ':waiting')) do fill(p, acct) end
return 1
"""
)


@t.final
class FairQueue(RedisQueue):
    """saq's Redis queue, with convert jobs handed to it round-robin between accounts.

    A job takes part when it is enqueued with `group_key` (its account) and, optionally,
    `meta["max_running"]`; other jobs (webhooks, cron) go through saq unchanged.
    """

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.fair_prefix = self.namespace("fair")
        self._taking = f"{self.fair_prefix}:taking"
        register = self.redis.register_script
        self._fair_enqueue = register(_ENQUEUE)
        self._taken = register(_TAKEN)
        self._finished = register(_FINISHED)
        self._fair_retry = register(_RETRY)
        self._withdraw = register(_WITHDRAW)
        self._position = register(_POSITION)
        self._refill = register(_REFILL)
        self._marked_active: set[str] = set()  # taken jobs _TAKEN already stored as active

    async def _enqueue(self, job: Job) -> Job | None:
        if job.group_key is None or job.scheduled:
            return await super()._enqueue(job)
        cap = job.meta.get("max_running")
        async with self._op_sem:
            added = await self._fair_enqueue(
                keys=[self._incomplete, job.id, self._queued, job.abort_id, self._active],
                args=[self.serialize(job), self.fair_prefix, job.group_key, "" if cap is None else cap],
                client=self.redis,
            )
        return job if added else None

    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Job | None:
        queued, taking = self._queued, self._taking
        # Redis 6+ takes fractions of a second here; redis-py annotates the timeout as int
        job_id = await self.redis.blmove(queued, taking, timeout, "LEFT", "RIGHT")  # type: ignore[arg-type]  # float ok
        if job_id is None:
            return None
        async with self._op_sem:
            taken = await self._taken(
                keys=[self._queued, self._active, self._taking],
                args=[self.fair_prefix, job_id],
                client=self.redis,
            )
        if taken is None:
            return None
        data, marked = taken
        job = self.deserialize(data)
        if job is not None and marked:
            self._marked_active.add(job.id)
        return job

    async def _update(self, job: Job, status: Status | None = None, **kwargs: t.Any) -> None:
        # saq's worker stores every job it takes as active (a SET and a PUBLISH nobody
        # waits for); _TAKEN stored exactly that in the same step as the take
        if status == Status.ACTIVE and job.id in self._marked_active:
            self._marked_active.discard(job.id)
            return None
        self._marked_active.discard(job.id)
        return await super()._update(job, status, **kwargs)

    async def _finish(self, job: Job, status: Status, **kwargs: t.Any) -> None:
        if job.group_key is None:
            return await super()._finish(job, status, **kwargs)
        self._marked_active.discard(job.id)
        await self._finished(
            keys=[self._queued, self._active, self._incomplete, job.id],
            args=[self.fair_prefix, job.group_key, self.serialize(job), job.ttl, status.value],
            client=self.redis,
        )

    async def _retry(self, job: Job, error: str | None) -> None:
        if job.group_key is None:
            return await super()._retry(job, error)
        # saq would put the job straight back into its list (or schedule it after a delay);
        # here it goes back to the head of its account's jobs, which keeps the cap true
        await self._fair_retry(
            keys=[self._queued, self._active, self._incomplete, job.id],
            args=[self.fair_prefix, self.serialize(job), job.group_key],
            client=self.redis,
        )
        await self.notify(job)

    async def abort(self, job: Job, error: str, ttl: float = 5) -> None:
        # a job still in its account's wait list is not in saq's list, where saq looks for it
        wait = f"{self.fair_prefix}:wait:{job.group_key}"
        if job.group_key is not None and await self._withdraw(keys=[wait], args=[job.id], client=self.redis):
            job.status = Status.ABORTING
            await self.finish(job, Status.ABORTED, error=error)
            return
        await super().abort(job, error, ttl)

    async def position(self, job_key: str, account: int) -> Position | None:
        """Where a queued job stands among its account's jobs; None when it is not queued."""
        found = await self._position(
            args=[self.fair_prefix, self.job_id(job_key), account], client=self.redis
        )
        if found is None:
            return None
        ahead, running, cap = (int(x) for x in found)
        return Position(ahead, running, None if cap < 0 else cap)

    async def waiting_accounts(self) -> list[int]:
        return [int(a) for a in await self.redis.smembers(f"{self.fair_prefix}:waiting")]

    async def refill(self, caps: dict[int, int | None]) -> None:
        """Refresh the caps of accounts with waiting jobs and hand each its next job if due."""
        args: list[t.Any] = [self.fair_prefix]
        for account, cap in caps.items():
            args += [account, "" if cap is None else cap]
        await self._refill(keys=[self._queued, self._active, self._taking], args=args, client=self.redis)


class Position(t.NamedTuple):
    jobs_ahead: int  # the account's own queued jobs that start before this one
    running: int  # the account's jobs running now
    max_running: int | None  # the plan's cap; None: unlimited

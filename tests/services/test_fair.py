"""Fair dispatch: accounts take turns at the workers, a plan caps an account's running jobs,
a queued job says how many of its account's jobs are ahead. Real Redis, real workers.

Each test uses a queue of its own, so the session's worker never takes its jobs, and starts
the workers it needs (in this process, or as `convertd worker` processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from saq import Worker

from app import worker as worker_module
from app.api.server import build_app
from app.auth.principal import Principal
from app.config import Settings
from app.runtime import Runtime
from app.services import jobs, recovery
from app.services.accounts import issue_master_token
from app.services.dispatch import FairQueue
from app.services.plans import set_plan
from app.storage import IncomingFile
from converters.sandbox import servers
from tests.conftest import Account, GraphQL
from tests.helpers import queue_tiny_job, start_local
from tests.test_worker import _principal, _start_worker, _worker_env
from tests.wsclient import connect, subscribe

pytestmark = [
    pytest.mark.usefixtures("rt"),
    pytest.mark.serial,
    pytest.mark.slow,  # 10-26 s each: floods of sparse-file jobs, worker processes
]


@contextlib.asynccontextmanager
async def own_queue(settings: Settings, name: str) -> AsyncIterator[Runtime]:
    """A runtime on a queue nobody else serves (a fresh name, so no leftovers either)."""
    queue = f"{name}-{uuid.uuid4().hex[:8]}"
    own = dataclasses.replace(settings, queue=dataclasses.replace(settings.queue, name=queue))
    rt = await Runtime.open(own, api=False)
    try:
        yield rt
    finally:
        await rt.close()


@contextlib.asynccontextmanager
async def in_process_worker(rt: Runtime, concurrency: int) -> AsyncIterator[Worker]:
    """A saq worker on `rt`'s queue running the real conversion function."""

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["runtime"] = rt
        # as the real worker does: a fork server started by the first job would hold the
        # event loop for seconds, and saq would sweep the silent jobs as dead
        await servers.prestart()

    w = Worker(
        rt.queue,
        functions=[worker_module.convert],
        concurrency=concurrency,
        startup=startup,
        timers={"sweep": 1},
        shutdown_grace_period_s=10,
    )
    w.SIGNALS = []
    task = asyncio.create_task(w.start())
    try:
        yield w
    finally:
        await w.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def submit(rt: Runtime, who: Principal, tmp: Path, size: int = 1000) -> uuid.UUID:
    """One hash job; a large `size` is a sparse file, which takes a while to hash."""
    path = tmp / f"in-{uuid.uuid4().hex}.bin"
    with open(path, "wb") as fh:
        if size > 1 << 20:
            fh.truncate(size)
        else:
            fh.write(b"x" * size)
    incoming = IncomingFile(path, "data.bin", size, None)
    options = {"algorithms": ["sha512"]} if size > 1 << 20 else None
    job = await jobs.convert(
        rt, who, filetype="hash", output_format="json", options=options, files=[incoming]
    )
    return job.id


async def until_all_ended(rt: Runtime, ids: list[uuid.UUID], timeout: float = 120) -> list[Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = await rt.pool.fetch(
            "SELECT id, account_id, status, attempts, started_at, finished_at FROM jobs"
            " WHERE id = ANY($1) ORDER BY started_at, id",
            ids,
        )
        if all(r["status"] in ("finished", "failed") for r in rows):
            assert all(r["status"] == "finished" for r in rows), [dict(r) for r in rows]
            return rows
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError([dict(r) for r in rows if r["status"] != "finished"])
        await asyncio.sleep(0.1)


async def principals(rt: Runtime, make_account: Any, names: str, plan: str = "pro") -> dict[str, Principal]:
    return {n: await _principal(rt, await make_account(f"fair-{n}", plan=plan)) for n in names}


async def test_three_accounts_floods_are_served_in_turn_and_in_order_within_each(
    rt: Runtime, settings: Settings, make_account: Any, tmp_path: Path
) -> None:
    async with own_queue(settings, "roundrobin") as own:
        who = await principals(rt, make_account, "abc")
        submitted: list[tuple[str, uuid.UUID]] = []
        # floods that overlap: A's five, B's three, A's two more, C's four, B's two more
        for name, count in (("a", 5), ("b", 3), ("a", 2), ("c", 4), ("b", 2)):
            for _ in range(count):
                submitted.append((name, await submit(own, who[name], tmp_path)))
        owner = {job_id: name for name, job_id in submitted}
        async with in_process_worker(own, concurrency=1):
            rows = await until_all_ended(own, [j for _, j in submitted])
        order = [owner[r["id"]] for r in rows]
        # plain FIFO would run them as submitted: aaaaabbbaaccccbb
        assert "".join(order) == "abcabcabcabc" + "abaa"
        for name in "abc":  # first in, first out within an account
            assert [r["id"] for r in rows if owner[r["id"]] == name] == [j for n, j in submitted if n == name]


async def test_an_account_with_nothing_running_goes_before_a_busy_accounts_next_job(
    rt: Runtime, settings: Settings, make_account: Any, tmp_path: Path
) -> None:
    async with own_queue(settings, "idlefirst") as own:
        who = await principals(rt, make_account, "ab")
        slow = 256 * 1024 * 1024
        a = [await submit(own, who["a"], tmp_path, slow) for _ in range(3)]
        async with in_process_worker(own, concurrency=1):
            deadline = asyncio.get_running_loop().time() + 60
            while await own.pool.fetchval("SELECT status FROM jobs WHERE id = $1", a[0]) != "processing":
                assert asyncio.get_running_loop().time() < deadline, "the worker never took A's job"
                await asyncio.sleep(0.05)
            b = await submit(own, who["b"], tmp_path)  # A's second job is queued already
            rows = await until_all_ended(own, [*a, b])
        assert [r["id"] for r in rows] == [a[0], b, a[1], a[2]]


async def test_running_cap_is_never_exceeded_and_others_use_the_free_slots(
    rt: Runtime, settings: Settings, make_account: Any, make_plan: Any, tmp_path: Path
) -> None:
    async with own_queue(settings, "cap") as own:
        assert isinstance(own.queue, FairQueue)
        capped = (await principals(rt, make_account, "a", plan=await make_plan(max_running=2)))["a"]
        other = (await principals(rt, make_account, "b"))["b"]
        big = 384 * 1024 * 1024  # seconds of hashing on this machine kind, no disk
        capped_ids = [await submit(own, capped, tmp_path, big) for _ in range(6)]
        other_ids = [await submit(own, other, tmp_path) for _ in range(3)]
        capped_keys = {str(j) for j in capped_ids}
        most = {"converting": 0, "held": 0}
        sampling = True

        async def sample(w: Worker) -> None:
            while sampling:
                # conversions of the capped account running in the worker right now
                converting = sum(
                    1
                    for job, ctx in list(w.job_task_contexts.items())
                    if job.key in capped_keys and not ctx["task"].done()
                )
                held = await own.redis.scard(f"{own.queue.fair_prefix}:run:{capped.account_id}")
                most["converting"] = max(most["converting"], converting)
                most["held"] = max(most["held"], held)
                await asyncio.sleep(0.02)

        async with in_process_worker(own, concurrency=4) as w:
            sampler = asyncio.create_task(sample(w))
            try:
                rows = await until_all_ended(own, capped_ids + other_ids, timeout=300)
            finally:
                sampling = False
                await sampler
    assert most["converting"] == 2 and most["held"] == 2  # reached, never passed
    by_id = {r["id"]: r for r in rows}
    # the other account's jobs did not wait for the capped account's six
    last_capped_start = max(by_id[j]["started_at"] for j in capped_ids)
    assert all(by_id[j]["finished_at"] < last_capped_start for j in other_ids)
    # and while two capped jobs ran, no third one started before one of them ended
    spans = sorted((by_id[j]["started_at"], by_id[j]["finished_at"]) for j in capped_ids)
    for i in range(2, len(spans)):
        assert spans[i][0] >= sorted(end for _, end in spans[:i])[i - 2]


async def test_a_killed_worker_gives_back_the_slot_it_held(
    rt: Runtime, settings: Settings, make_account: Any, make_plan: Any, tmp_path: Path
) -> None:
    async with own_queue(settings, "killslot") as own:
        who = (await principals(rt, make_account, "a", plan=await make_plan(max_running=1)))["a"]
        env = _worker_env(own.settings, own.settings.queue.name)
        first = second = None
        try:
            first = _start_worker(env)
            held = await submit(own, who, tmp_path, 1536 * 1024 * 1024)
            after = await submit(own, who, tmp_path)
            deadline = asyncio.get_running_loop().time() + 60
            while await own.pool.fetchval("SELECT status FROM jobs WHERE id = $1", held) != "processing":
                assert asyncio.get_running_loop().time() < deadline, "the first worker never took the job"
                await asyncio.sleep(0.1)
            waiting = await own.queue.position(str(after), who.account_id)
            assert waiting is not None and waiting.running == 1 and waiting.max_running == 1
            first.kill()
            first.wait()
            second = _start_worker(env)
            rows = {r["id"]: r for r in await until_all_ended(own, [held, after], timeout=180)}
        finally:
            for proc in (first, second):
                if proc and proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
        assert rows[held]["attempts"] == 2  # swept from the dead worker, run again
        assert rows[after]["started_at"] >= rows[held]["finished_at"]  # the cap of one held
        assert await own.redis.scard(f"{own.queue.fair_prefix}:run:{who.account_id}") == 0
        assert not await own.redis.hexists(f"{own.queue.fair_prefix}:ready", str(who.account_id))


async def test_two_worker_processes_share_one_fair_order(
    rt: Runtime, settings: Settings, make_account: Any, tmp_path: Path
) -> None:
    async with own_queue(settings, "twoprocs") as own:
        who = await principals(rt, make_account, "abc")
        env = {**_worker_env(own.settings, own.settings.queue.name), "CONVERTD_WORKER_CONCURRENCY": "1"}
        procs = [_start_worker(env), _start_worker(env)]
        try:
            deadline = asyncio.get_running_loop().time() + 60
            while len((await own.queue.info())["workers"]) < 2:
                assert asyncio.get_running_loop().time() < deadline, "the workers did not start"
                await asyncio.sleep(0.2)
            a = [await submit(own, who["a"], tmp_path, 256 * 1024 * 1024) for _ in range(8)]
            b = [await submit(own, who["b"], tmp_path) for _ in range(2)]
            c = [await submit(own, who["c"], tmp_path) for _ in range(2)]
            rows = await until_all_ended(own, a + b + c, timeout=300)
        finally:
            for proc in procs:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        started = [r["id"] for r in rows]
        # FIFO would start B's and C's first jobs ninth and eleventh, after all of A's
        assert started.index(b[0]) < started.index(a[4]) and started.index(c[0]) < started.index(a[4])
        workers = {(await own.queue.job(str(j))).worker_id for j in started}  # type: ignore[union-attr]
        assert len(workers) == 2


async def test_reconcile_refreshes_caps_and_puts_back_a_take_a_dead_worker_left(
    rt: Runtime, settings: Settings, make_account: Any, make_plan: Any, tmp_path: Path
) -> None:
    async with own_queue(settings, "repair") as own:
        q = own.queue
        assert isinstance(q, FairQueue)
        plan = await make_plan(max_running=1)
        who = (await principals(rt, make_account, "a", plan=plan))["a"]
        ids = [await submit(own, who, tmp_path) for _ in range(2)]
        assert await q.position(str(ids[1]), who.account_id) == (1, 0, 1)
        await set_plan(rt.pool, plan, max_running=3)
        await recovery.refresh_dispatch(own)
        assert await q.position(str(ids[1]), who.account_id) == (1, 0, 3)
        # a worker dies right after taking a job off saq's list, before it recorded the take
        taken = await own.redis.blmove(q._queued, q._taking, 1, "LEFT", "RIGHT")
        assert taken == q.job_id(str(ids[0])).encode()
        looked = f"{q.fair_prefix}:taking-seen-at"
        await own.redis.set(looked, 0)  # the last look was long ago
        await recovery.refresh_dispatch(own)  # a first look: a take may be under way
        assert await own.redis.llen(q._queued) == 0
        await own.redis.set(looked, 0)  # as if that look were 10 s old
        await recovery.refresh_dispatch(own)
        assert await own.redis.lrange(q._queued, 0, -1) == [taken]
        async with in_process_worker(own, concurrency=2):
            await until_all_ended(own, ids)


@contextlib.asynccontextmanager
async def api_without_workers(settings: Settings) -> AsyncIterator[tuple[Runtime, str]]:
    """The service over a queue no worker serves: jobs stay queued."""
    queue = f"noworkers-{uuid.uuid4().hex[:8]}"
    own = dataclasses.replace(settings, queue=dataclasses.replace(settings.queue, name=queue))
    rt = await Runtime.open(own)
    runner, url = await start_local(build_app(rt))
    try:
        yield rt, url
    finally:
        await runner.cleanup()
        await rt.close()


async def test_a_queued_job_says_how_many_of_its_accounts_jobs_are_ahead(
    settings: Settings, http: aiohttp.ClientSession, make_account: Any, make_plan: Any
) -> None:
    acct: Account = await make_account("waiting", plan=await make_plan(max_running=3))
    headers = {"X-API-Key": acct.key}
    async with api_without_workers(settings) as (_, base):
        ids = []
        for _ in range(3):
            ids.append(await queue_tiny_job(http, base, acct.key, b"queued", output_format="json"))

        async def rest_queue(job_id: str) -> Any:
            async with http.get(f"{base}/v1/status/{job_id}", headers=headers) as r:
                body = await r.json()
            return body["status"], body.get("queue")

        assert [await rest_queue(j) for j in ids] == [
            ("pending", {"jobs_ahead": n, "running": 0, "max_running": 3}) for n in range(3)
        ]
        gql = GraphQL(http, base)
        query = "query($id: ID!) { job(id: $id) { status queue { jobsAhead running maxRunning } } }"
        found = await gql(query, {"id": ids[2]}, key=acct.key)
        assert found["data"]["job"] == {
            "status": "PENDING",
            "queue": {"jobsAhead": 2, "running": 0, "maxRunning": 3},
        }
        # a job cancelled ahead no longer counts; the cancelled one no longer waits
        async with http.post(f"{base}/v1/cancel/{ids[1]}", headers=headers) as r:
            assert r.status == 200
        assert await rest_queue(ids[1]) == ("failed", None)
        assert (await rest_queue(ids[2]))[1]["jobs_ahead"] == 1
        # the server-sent events say it too (the jobUpdates subscription's first message)
        async with http.get(f"{base}/v1/events/{ids[2]}", headers=headers) as r:
            line = b""
            while not line.startswith(b"data: "):
                line = await r.content.readline()
        assert json.loads(line[6:])["queue"]["jobs_ahead"] == 1
        # and the jobUpdates subscription
        sub, _ = await connect(http, base, payload={"apiKey": acct.key})
        document = "subscription($id: ID!) { jobUpdates(jobId: $id) { status queue { jobsAhead } } }"
        await subscribe(sub, document, {"id": ids[2]})
        first = await sub.next_message()
        assert first["payload"]["data"]["jobUpdates"] == {"status": "PENDING", "queue": {"jobsAhead": 1}}
        await sub.ws.close()
        for job_id in (ids[0], ids[2]):  # nothing left for the session's recovery to pick up
            async with http.post(f"{base}/v1/cancel/{job_id}", headers=headers) as r:
                assert r.status == 200


async def test_max_running_in_keys_me_the_me_query_and_the_account_api(
    rt: Runtime,
    http: aiohttp.ClientSession,
    base_url: str,
    gql: GraphQL,
    make_account: Any,
    make_plan: Any,
) -> None:
    plan = await make_plan(max_running=4)
    acct: Account = await make_account("capped", plan=plan)
    async with http.get(f"{base_url}/v1/keys/me", headers={"X-API-Key": acct.key}) as r:
        assert (await r.json())["max_running"] == 4
    me = await gql("{ me { plan maxRunning } }", key=acct.key)
    assert me["data"]["me"] == {"plan": plan, "maxRunning": 4}
    master = await issue_master_token(rt.pool, acct.account_id)
    async with http.get(f"{base_url}/v1/account", headers={"Authorization": f"Bearer {master}"}) as r:
        assert (await r.json())["account"]["plan"]["max_running"] == 4
    account = await gql("{ account { plan { maxRunning } } }", headers={"Authorization": f"Bearer {master}"})
    assert account["data"]["account"]["plan"] == {"maxRunning": 4}
    unlimited = await make_account("uncapped", plan="pro")  # existing plans stay unlimited
    async with http.get(f"{base_url}/v1/keys/me", headers={"X-API-Key": unlimited.key}) as r:
        assert (await r.json())["max_running"] is None


async def test_plans_set_max_running_on_the_command_line(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app import cli

    for name, value in (
        ("DATABASE_URL", settings.database_url),
        ("REDIS_URL", settings.redis_url),
        ("SECRET", settings.secret),
        ("DATA_DIR", str(settings.data_dir)),
    ):
        monkeypatch.setenv(f"CONVERTD_{name}", value or "")
    name = f"cli-run-{uuid.uuid4().hex[:6]}"

    async def run(*argv: str) -> str:
        capsys.readouterr()
        await asyncio.to_thread(cli.main, list(argv))
        return capsys.readouterr().out

    assert json.loads(await run("plans", "set", name, "--max-running", "3", "--json"))[0]["max_running"] == 3
    assert "RUNNING" in await run("plans", "list")
    out = json.loads(await run("plans", "set", name, "--max-running", "unlimited", "--json"))
    assert out[0]["max_running"] is None
    with pytest.raises(SystemExit):
        await run("plans", "set", name, "--max-running", "0")

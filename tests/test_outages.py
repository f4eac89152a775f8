"""Faults as operators meet them, on `convertd serve` itself: PostgreSQL or Redis down,
an embedded server killed, a worker process killed mid-run, a graceful stop.

Each test runs the real service in its own process (as the README starts it) and kills
real server processes; nothing is simulated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import psutil
import pytest
import requests

from app import embedded

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # `convertd serve` with its servers killed

CLI = [sys.executable, "-m", "app.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Service:
    base: str
    key: str
    proc: subprocess.Popen[str]
    env: dict[str, str]

    def convert(self, data: bytes, *, wait: bool = True, timeout: float = 30) -> requests.Response:
        return requests.post(
            f"{self.base}/v1/convert",
            headers={"X-API-Key": self.key},
            files={"file": ("data.bin", data)},
            data={"filetype": "hash", "output_format": "json", **({"wait": "30"} if wait else {})},
            timeout=timeout,
        )

    def submit(self, path: Path, filetype: str, output_format: str) -> requests.Response:
        """An asynchronous convert of a file on disk."""
        return requests.post(
            f"{self.base}/v1/convert",
            headers={"X-API-Key": self.key},
            files={"file": (path.name, path.read_bytes())},
            data={"filetype": filetype, "output_format": output_format},
            timeout=60,
        )

    def graphql(self, query: str) -> requests.Response:
        return requests.post(
            f"{self.base}/graphql", json={"query": query}, headers={"X-API-Key": self.key}, timeout=30
        )

    def status(self, job_id: str) -> str:
        return str(self.get(f"/v1/status/{job_id}").json()["status"])

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(f"{self.base}{path}", headers={"X-API-Key": self.key}, timeout=30, **kwargs)

    def workers(self) -> list[psutil.Process]:
        return [p for p in psutil.Process(self.proc.pid).children() if p.cmdline()[-1:] == ["worker"]]


@contextlib.contextmanager
def serve(data_dir: Path, *args: str, key: str | None = None, **env: str) -> Iterator[Service]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CONVERTD_")}
    environ.update(CONVERTD_DATA_DIR=str(data_dir), **env)
    port = _free_port()
    log = (data_dir.parent / "serve.log").open("a")  # read it when a test fails
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), *args], env=environ, stdout=log, stderr=log, text=True
    )
    log.close()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{base}/v1/", timeout=1).ok:
                    break
            assert proc.poll() is None, "serve exited"
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.3)
        if key is None:
            made = subprocess.run(
                [*CLI, "keys", "create", "--name", "faults", "--json"],
                env=environ,
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
            key = json.loads(made.stdout.strip().splitlines()[-1])["key"]
        yield Service(base, key, proc, environ)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _finished_digest(svc: Service, job_id: str, deadline: float) -> str:
    """Wait for the job to finish, then return the sha256 its output reports."""
    while True:
        status = svc.get(f"/v1/status/{job_id}").json()
        if status["status"] == "finished":
            break
        assert status["status"] in ("pending", "processing"), status
        assert time.monotonic() < deadline, f"job {job_id} did not finish: {status}"
        time.sleep(0.3)
    out = svc.get(f"/v1/download/{job_id}")
    assert out.status_code == 200, out.text
    return out.json()["sha256"]


def _finished_digest_any(svc: Service, job_id: str, deadline: float) -> None:
    """Wait for the job to finish (any output)."""
    while (status := svc.status(job_id)) != "finished":
        # one read per turn: a second read could see it finish between the two
        assert status in ("pending", "processing"), status
        assert time.monotonic() < deadline, f"job {job_id} did not finish"
        time.sleep(0.3)


def _until(predicate: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        # (a server between two lives: no pid file yet, or its process just gone)
        with contextlib.suppress(requests.RequestException, psutil.Error, OSError, ValueError):
            value = predicate()
            if value:
                return value
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def _assert_unavailable(resp: requests.Response) -> None:
    assert resp.status_code == 503, resp.text
    assert int(resp.headers["Retry-After"]) > 0
    body = resp.json()
    assert body["error_code"] == "SERVICE_UNAVAILABLE"
    assert "try again" in body["hint"].lower()


def _make_wav(path: Path, seconds: int) -> None:
    """A stereo tone long enough that converting it takes a few seconds."""
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-f", "lavfi",
         "-i", f"sine=frequency=440:duration={seconds}", "-ac", "2", str(path)],
        check=True,
    )  # fmt: skip


def _postmaster(pg_dir: Path) -> psutil.Process:
    return psutil.Process(int((pg_dir / "postmaster.pid").read_text().split()[0]))


def _kill_postgres(pg_dir: Path) -> None:
    postmaster = _postmaster(pg_dir)
    backends = postmaster.children()
    postmaster.kill()
    postmaster.wait(10)
    # a killed postmaster's backends notice and leave; a new server waits for them
    psutil.wait_procs(backends, timeout=10)


def test_outages_answer_503_and_the_service_recovers_by_itself(tmp_path: Path) -> None:
    """Servers the service does not own (URLs configured): while one is down every request
    that needs it answers 503 with Retry-After and a hint, nothing is half-written, and the
    service works again as soon as the server is back, without a restart."""
    redis = embedded.RedisServer(tmp_path / "redis")
    redis.start()
    pg, database_url = embedded.start_postgres(tmp_path / "pg")
    pg_dir = tmp_path / "pg" / "postgres"
    try:
        with serve(tmp_path / "d", CONVERTD_DATABASE_URL=database_url, CONVERTD_REDIS_URL=redis.url) as svc:
            first = svc.convert(b"before")
            assert first.status_code == 200
            first_id = first.headers["X-Job-Id"]
            used = svc.get("/v1/keys/me").json()

            # Redis down: the queue, rate limits and events are out of reach
            assert redis.proc is not None
            redis.proc.kill()
            redis.proc.wait()
            _assert_unavailable(svc.convert(b"during redis outage", wait=False))
            gql = svc.graphql("{ jobs(first: 50) { nodes { id } } }")
            assert gql.status_code == 503, gql.text
            assert gql.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"

            redis.start()  # same address, password and data
            _until(lambda: svc.convert(b"after redis").status_code == 200, 60, "no recovery after Redis")
            # the refused request left no job and cost no conversion
            answer = svc.graphql("{ jobs(first: 50) { nodes { id } } }").json()
            listed = answer["data"]["jobs"]["nodes"] if answer.get("data") else answer
            assert len(listed) == 2, listed
            after = svc.get("/v1/keys/me").json()
            assert after["conversions_used"] == used["conversions_used"] + 1, (used, after)

            # a caller following a job sees its end even when Redis restarts meanwhile (the
            # end's event is lost with Redis: the hub hands listeners the stored job instead)
            wav = tmp_path / "long.wav"
            _make_wav(wav, seconds=240)
            resp = svc.submit(wav, "audio", "flac")
            job_id = resp.json()["job_id"]
            events = requests.get(
                f"{svc.base}/v1/events/{job_id}", headers={"X-API-Key": svc.key}, stream=True, timeout=120
            )
            _until(lambda: svc.status(job_id) == "processing", 30, "not started")
            redis.proc.kill()
            redis.proc.wait()
            # (the API needs Redis for every caller's rate limit: ask the database itself)
            stored = f"\\c convertd\nSELECT status FROM jobs WHERE id = '{job_id}';"
            # (the worker may have met the outage first, announcing the job: then it waits
            # for Redis, and the end comes after the restart; either way the follower sees it)
            with contextlib.suppress(AssertionError):
                _until(lambda: "finished" in pg.psql(stored), 15, "")  # type: ignore[attr-defined]
            redis.start()
            last = None
            for line in events.iter_lines(decode_unicode=True):
                if line.startswith("data: "):
                    last = json.loads(line[6:])
            assert last is not None and last["status"] == "finished", last

            # PostgreSQL down: jobs, keys and quotas are out of reach
            _kill_postgres(pg_dir)
            _assert_unavailable(svc.get(f"/v1/status/{first_id}"))
            _assert_unavailable(svc.convert(b"during postgres outage", wait=False))

            def restart() -> bool:
                with pg._lock:  # type: ignore[attr-defined]
                    pg.ensure_postgres_running()  # type: ignore[attr-defined]
                return True

            _until(restart, 60, "PostgreSQL did not start again")
            done = _until(lambda: (r := svc.convert(b"after postgres")).status_code == 200 and r, 60,
                          "no recovery after PostgreSQL")  # fmt: skip
            assert done.json()["sha256"] == _digest(b"after postgres")
    finally:
        redis.stop()
        pg.cleanup()  # type: ignore[attr-defined]


def test_embedded_servers_are_restarted_and_no_acknowledged_job_is_lost(tmp_path: Path) -> None:
    """`convertd serve` without URLs: SIGKILL its Redis, then its PostgreSQL, while jobs
    come in; each comes back on its own, and every job that was acknowledged finishes
    with the right output."""
    data_dir = tmp_path / "d"
    with serve(data_dir, CONVERTD_SWEEP_INTERVAL="1") as svc:
        accepted: dict[str, bytes] = {}
        stop = threading.Event()

        def load() -> None:
            n = 0
            while not stop.is_set():
                data = f"job {n}".encode()
                n += 1
                with contextlib.suppress(requests.RequestException):
                    resp = svc.convert(data, wait=False, timeout=10)
                    if resp.status_code == 202:
                        accepted[resp.json()["job_id"]] = data
                    else:
                        assert resp.status_code == 503, resp.text
                time.sleep(0.2)

        client = threading.Thread(target=load)
        client.start()
        try:
            _until(lambda: len(accepted) >= 3, 60, "the load was never accepted")
            redis_proc = next(
                p for p in psutil.Process(svc.proc.pid).children() if "redis-server" in p.name()
            )
            redis_proc.kill()
            new_redis = _until(
                lambda: [p for p in psutil.Process(svc.proc.pid).children()
                         if "redis-server" in p.name() and p.pid != redis_proc.pid],
                30, "serve did not start Redis again",
            )  # fmt: skip
            assert new_redis
            seen = len(accepted)  # load acknowledged with the new Redis before PostgreSQL goes
            _until(lambda: len(accepted) >= seen + 2, 60, "no load accepted after Redis came back")
            pg_dir = data_dir / "postgres"
            old = _postmaster(pg_dir).pid
            _kill_postgres(pg_dir)
            _until(lambda: _postmaster(pg_dir).pid != old and _postmaster(pg_dir).is_running(), 60,
                   "serve did not start PostgreSQL again")  # fmt: skip
        finally:
            stop.set()
            client.join()
        # accepted again once both are back (the queued load goes first: no sync wait here)
        after = _until(lambda: (r := svc.convert(b"after both", wait=False)).status_code == 202 and r, 60,
                       "no recovery")  # fmt: skip
        accepted[after.json()["job_id"]] = b"after both"
        assert len(accepted) >= 5, "the load should have been acknowledged between the outages"
        deadline = time.monotonic() + 180  # recovery re-queues what Redis lost within a few minutes
        for job_id, data in accepted.items():
            assert _finished_digest(svc, job_id, deadline) == _digest(data)


def test_a_killed_worker_process_loses_no_job_and_sigterm_drains(tmp_path: Path) -> None:
    """50 jobs on two worker processes; one is SIGKILLed mid-run: all 50 finish, each
    with its own output, exactly one stored output each. Then a graceful stop."""
    data_dir = tmp_path / "d"
    with serve(data_dir, "--worker-processes", "2", CONVERTD_SWEEP_INTERVAL="1") as svc:
        _until(lambda: len(svc.workers()) == 2, 60, "two worker processes")
        first_key = svc.key
        jobs = {}
        for n in range(50):
            data = os.urandom(64 * 1024) + str(n).encode()
            resp = svc.convert(data, wait=False)
            assert resp.status_code == 202, resp.text
            jobs[resp.json()["job_id"]] = data
        # kill a worker once the workers are running jobs (not before they took any); a tiny
        # job can start and finish between two looks, so a finished one counts as started
        started = ("processing", "finished")
        _until(lambda: any(svc.get(f"/v1/status/{j}").json()["status"] in started for j in jobs), 60,
               "no job started")  # fmt: skip
        victim = svc.workers()[0]
        victim.kill()
        deadline = time.monotonic() + 180
        for job_id, data in jobs.items():
            assert _finished_digest(svc, job_id, deadline) == _digest(data)
        # one stored output per job: an attempt killed with its worker left nothing behind
        outputs = [p for p in (data_dir / "files" / "outputs").rglob("*") if p.is_file()]
        assert sorted(p.parent.name for p in outputs) == sorted(jobs), len(outputs)

    # graceful stop: SIGTERM lets a running job finish within CONVERTD_DRAIN_SECONDS
    wav = tmp_path / "long.wav"
    _make_wav(wav, seconds=240)
    with serve(data_dir, CONVERTD_DRAIN_SECONDS="120", key=first_key) as svc:
        resp = svc.submit(wav, "audio", "flac")
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["job_id"]
        _until(lambda: svc.get(f"/v1/status/{job_id}").json()["status"] == "processing", 30, "not started")
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(150) == 0
        # the service is gone now: the next run shows what it did with the running job
    with serve(data_dir, key=first_key) as svc:
        job = svc.graphql(f'{{ job(id: "{job_id}") {{ status attempts }} }}').json()["data"]["job"]
        # finished by the first attempt: not cancelled and run again by the next service
        assert job == {"status": "FINISHED", "attempts": 1}, job

    # past the drain time a running job goes back to the queue: no drain at all here
    with serve(data_dir, CONVERTD_DRAIN_SECONDS="0", key=first_key) as svc:
        resp = svc.submit(wav, "audio", "mp3")
        cut_id = resp.json()["job_id"]
        _until(lambda: svc.status(cut_id) == "processing", 60, "not started")
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(150) == 0
    with serve(data_dir, key=first_key) as svc:
        # the next service runs it again: a second attempt, to its end
        _finished_digest_any(svc, cut_id, time.monotonic() + 120)
        job = svc.graphql(f'{{ job(id: "{cut_id}") {{ status attempts }} }}').json()["data"]["job"]
        assert job == {"status": "FINISHED", "attempts": 2}, job

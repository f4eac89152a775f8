"""Several machines, as the README's "Several machines" section runs them: one API node
(`convertd serve --no-workers`) and two `convertd worker` processes, each with a data
directory of its own, sharing only PostgreSQL, Redis and an S3-compatible store (moto).

Every process is a real `convertd` process; one worker is SIGKILLed mid-job.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import imageio_ffmpeg
import pytest
import yaml
from PIL import Image

from tests.conftest import S3Server, free_port, png_bytes
from tests.converters import samples_media
from tests.helpers import wait_until
from tests.wsclient import connect

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # three `convertd` processes, one of them killed

CLI = [sys.executable, "-m", "app.cli"]
FOLLOW = "subscription Follow($id: ID!) { jobUpdates(jobId: $id) { id status attempts } }"


def _start(args: list[str], env: dict[str, str], data_dir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    data_dir.mkdir(parents=True)
    log = data_dir.parent / f"{data_dir.name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CLI, *args],
            env={**env, "CONVERTD_DATA_DIR": str(data_dir)},
            stdout=out,
            stderr=out,
            start_new_session=True,  # its converters and fork server are stopped with it
        )
    return proc, log


def _log_jobs(log: Path, message: str) -> set[str]:
    """The jobs a worker's JSON log lines say it took ("job taken") or ended ("job finished")."""
    return {job_id for job_id, _ in _log_attempts(log, message)}


def _log_attempts(log: Path, message: str) -> set[tuple[str, int]]:
    found = set()
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("message") == message:
                found.add((entry["job_id"], entry.get("attempt", 0)))
    return found


def _wav(path: Path, seconds: int) -> bytes:
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-f", "lavfi",
         "-i", f"sine=frequency=440:duration={seconds}", "-ac", "1", str(path)],
        check=True,
    )  # fmt: skip
    return path.read_bytes()


def _inputs(short: bytes, long: bytes) -> list[tuple[str, bytes, str, str]]:
    """40 small jobs of six filetypes (name, bytes, filetype, output format): four slowish
    ones first, that fill the two workers' slots, then two long ones (a VP9 encode of a
    small video takes seconds), then the rest."""
    jobs = [(f"short{n}.wav", short, "audio", "mp3") for n in range(4)]
    jobs += [(f"long{n}.mp4", long, "video", "webm") for n in range(2)]
    for n in range(34):
        if n % 4 == 0:
            jobs.append((f"blob{n}.bin", os.urandom(2048) + str(n).encode(), "hash", "json"))
        elif n % 4 == 1:
            jobs.append((f"pic{n}.png", png_bytes((40 + n, 30), "teal"), "image", "webp"))
        elif n % 4 == 2:
            jobs.append((f"rec{n}.json", json.dumps({"n": n, "tags": ["a", "b"]}).encode(), "data", "yaml"))
        else:
            jobs.append((f"doc{n}.md", f"# Title {n}\n\nSome *text*.\n".encode(), "document", "html"))
    return jobs


def _check_output(name: str, data: bytes, filetype: str, out: bytes) -> None:
    if filetype == "hash":
        assert json.loads(out)["sha256"] == hashlib.sha256(data).hexdigest(), name
    elif filetype == "image":
        image = Image.open(io.BytesIO(out))
        assert (image.format, image.size) == ("WEBP", Image.open(io.BytesIO(data)).size), name
    elif filetype == "data":
        assert yaml.safe_load(out) == json.loads(data), name
    elif filetype == "document":
        assert f"Title {name[3:-3]}</h1>" in out.decode(), name
    elif filetype == "video":
        assert out[:4] == b"\x1a\x45\xdf\xa3", name  # a Matroska (WebM) file
    else:
        assert out[:3] == b"ID3" or out[0] == 0xFF, name  # an MP3 stream


async def _stuck(
    http: aiohttp.ClientSession,
    base: str,
    headers: dict[str, str],
    ids: dict[str, Any],
    seen: dict[str, list[tuple[str, int]]],
    ended: set[str],
    logs: list[Path],
) -> str:
    """What a subscription that never ended saw, what the API says of its job, and the
    nodes' log lines about it: the failure's whole story, on a CI machine nobody can enter."""
    story = []
    for job_id in set(ids) - ended:
        async with http.get(f"{base}/v1/status/{job_id}", headers=headers) as r:
            status = await r.text()
        lines = [
            f"{log.name}: {line}"
            for log in logs
            for line in log.read_text(errors="replace").splitlines()
            if job_id in line
        ]
        story.append(f"{ids[job_id][0]} {job_id} events={seen[job_id]} status={status}\n" + "\n".join(lines))
    tails = ["\n".join(log.read_text(errors="replace").splitlines()[-15:]) for log in logs]
    return (
        "subscriptions that never ended:\n"
        + "\n\n".join(story)
        + "\n\nlast log lines:\n"
        + "\n---\n".join(tails)
    )


async def test_one_api_node_and_two_workers_share_only_the_servers(
    servers: Any, s3_server: S3Server, tmp_path: Path
) -> None:
    prefix = f"mn-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERTD_")}
    env.update(
        CONVERTD_DATABASE_URL=servers.database_url,
        CONVERTD_REDIS_URL=servers.redis_url,
        CONVERTD_STORAGE_URL=f"s3://{s3_server.bucket}/{prefix}",
        CONVERTD_S3_ENDPOINT_URL=s3_server.endpoint,
        CONVERTD_SECRET="one-secret-for-every-node",  # signed URLs and webhooks, on any node
        CONVERTD_QUEUE=prefix,  # this deployment's own queue on the session's Redis
        CONVERTD_SWEEP_INTERVAL="1",
        CONVERTD_OFFICE_INSTANCES="0",  # no LibreOffice job here: no warm pool to start
        CONVERTD_LOG_FORMAT="json",
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api, api_log = _start(["serve", "--no-workers", "--port", str(port)], env, tmp_path / "api")
    procs = [api]
    video = samples_media.make("mp4", tmp_path / "long.mp4", seconds=6, size=(320, 240))
    jobs = _inputs(_wav(tmp_path / "short.wav", 15), video.read_bytes())
    try:
        async with aiohttp.ClientSession() as http:

            async def up() -> bool:
                assert api.poll() is None, api_log.read_text()
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{base}/v1/") as r:
                        return r.status == 200
                return False

            await wait_until(up, 120, "the API node did not come up")
            made = await asyncio.to_thread(
                subprocess.run,
                [*CLI, "keys", "create", "--name", "multi", "--json"],
                env={**env, "CONVERTD_DATA_DIR": str(tmp_path / "api")},
                capture_output=True,
                text=True,
                check=True,
            )
            key = json.loads(made.stdout.strip().splitlines()[-1])["key"]
            headers = {"X-API-Key": key}

            sub, ack = await connect(http, base, payload={"apiKey": key})
            assert ack["type"] == "connection_ack", ack
            seen: dict[str, list[tuple[str, int]]] = {}
            ended: set[str] = set()

            async def read_events() -> None:
                while len(ended) < len(jobs):
                    msg = await sub.next_message(timeout=300)
                    if msg["type"] == "next":
                        update = msg["payload"]["data"]["jobUpdates"]
                        seen[msg["id"]].append((update["status"], update["attempts"]))
                    elif msg["type"] == "complete":
                        ended.add(msg["id"])
                    else:
                        raise AssertionError(msg)

            reader = asyncio.create_task(read_events())
            workers = [_start(["worker"], env, tmp_path / f"worker{i}") for i in (1, 2)]
            procs += [proc for proc, _ in workers]
            await wait_until(lambda: all("worker ready" in log.read_text() for _, log in workers), 120,
                         "the workers did not start")  # fmt: skip

            long_jobs: set[str] = set()

            def running_long_job() -> tuple[int, set[str]] | None:
                """A worker in the middle of a long job that has ended jobs before it."""
                for i, (_, log) in enumerate(workers):
                    finished = _log_jobs(log, "job finished")
                    if finished and (running := (_log_jobs(log, "job taken") - finished) & long_jobs):
                        return i, running
                return None

            async def kill_mid_long_job() -> tuple[int, set[str]]:
                victim, cut_jobs = await wait_until(running_long_job, 180, "a worker running a long job")
                workers[victim][0].kill()  # SIGKILL, mid-conversion
                await asyncio.to_thread(workers[victim][0].wait)
                return victim, cut_jobs

            # watched while jobs are still being submitted: the long jobs start meanwhile
            killer = asyncio.create_task(kill_mid_long_job())
            # each job is followed on the API node from the moment it is accepted
            ids: dict[str, tuple[str, bytes, str, str]] = {}
            for job in jobs:
                form = aiohttp.FormData()
                form.add_field("file", job[1], filename=job[0])
                form.add_field("filetype", job[2])
                form.add_field("output_format", job[3])
                async with http.post(f"{base}/v1/convert", data=form, headers=headers) as r:
                    body = await r.json()
                    assert r.status == 202, body
                job_id = body["job_id"]
                ids[job_id], seen[job_id] = job, []
                if job[0].startswith("long"):
                    long_jobs.add(job_id)
                payload = {"query": FOLLOW, "variables": {"id": job_id}}
                await sub.ws.send_json({"id": job_id, "type": "subscribe", "payload": payload})
            _, cut_jobs = await killer

            try:
                await asyncio.wait_for(reader, 240)  # every subscription ended
            except TimeoutError:
                raise AssertionError(
                    await _stuck(
                        http, base, headers, ids, seen, ended, [api_log] + [log for _, log in workers]
                    )
                ) from None
            for job_id, events in seen.items():
                assert events[-1][0] == "FINISHED", (ids[job_id][0], events)
            # the killed attempt was taken up by the other worker: a second attempt, finished
            # (one of them may have ended in the instant before the kill)
            assert any(seen[j][-1] == ("FINISHED", 2) for j in cut_jobs), {j: seen[j] for j in cut_jobs}
            # the API node's subscribers saw events from jobs on both workers: after the job
            # as it stood, a change made by that worker's attempt (the victim's included)
            for _, log in workers:
                taken = _log_attempts(log, "job taken")
                assert any(attempt in [a for _, a in seen[j][1:]] for j, attempt in taken), (log, taken)

            for job_id, (name, data, filetype, _) in ids.items():
                async with http.get(f"{base}/v1/status/{job_id}", headers=headers) as r:
                    status = await r.json()
                assert status["status"] == "finished", status
                async with http.get(status["download_url"]) as r:  # streamed from the store
                    assert r.status == 200, await r.text()
                    _check_output(name, data, filetype, await r.read())
            # one stored output per job: the killed attempt left none behind
            outputs = s3_server.keys(f"{prefix}/outputs/")
            assert sorted(k.split("/")[3] for k in outputs) == sorted(ids), outputs
            # no node shares a file: each data directory holds only its own spool
            for node in ("worker1", "worker2"):
                assert not list((tmp_path / node).rglob("uploads")), node
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

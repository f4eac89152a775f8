"""`convertd serve` with a worker process: one /metrics for both processes, JSON log lines
that carry a request's id from the API process into the worker's (issue 8, item 13)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from app.config import Settings
from tests.api.test_health_metrics import samples, value
from tests.cli.test_serve import _free_port
from tests.conftest import Account

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # `convertd serve` start-up


def _wait_ready(base: str, server: subprocess.Popen[str], log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        try:
            r = requests.get(f"{base}/readyz", timeout=5)
            if r.status_code == 200:
                return r.json()
        except requests.ConnectionError:
            pass
        assert server.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "serve did not become ready"
        time.sleep(0.3)


async def test_serve_adds_up_metrics_of_its_worker_process_and_logs_json(
    settings: Settings, make_account: Any, tmp_path: Path
) -> None:
    acct: Account = await make_account("observed")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVERTD_", "PROMETHEUS_"))}
    env.update(
        CONVERTD_DATA_DIR=str(tmp_path / "d"),
        CONVERTD_DATABASE_URL=settings.database_url or "",
        CONVERTD_REDIS_URL=settings.redis_url or "",
        CONVERTD_SECRET=settings.secret,
        CONVERTD_QUEUE=f"observed-{uuid.uuid4().hex[:8]}",  # its own queue: only its worker runs these
        CONVERTD_OFFICE_INSTANCES="0",  # no office jobs here: no warm LibreOffice to start
    )
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "stderr.log"
    with open(log, "w") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--worker-processes", "1"],
            env=env, stdout=subprocess.DEVNULL, stderr=err, text=True,
        )  # fmt: skip
    try:
        ready = _wait_ready(base, server, log)
        assert ready["components"]["workers"]["count"] == 1
        rid = f"serve-{uuid.uuid4().hex}"
        resp = requests.post(
            f"{base}/v1/convert",
            headers={"X-API-Key": acct.key, "X-Request-Id": rid},
            files={"file": ("a.txt", b"abc")},
            data={"filetype": "hash", "output_format": "txt", "wait": "30"},
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
        assert resp.headers["X-Request-Id"] == rid
        scrape = samples(requests.get(f"{base}/metrics", timeout=10).text)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    # the job ran in the worker process: its duration and events reached the API's /metrics
    assert value(scrape, "convertd_job_duration_seconds_count", filetype="hash", converter="hashlib",
                 status="finished") == 1  # fmt: skip
    # the job's end, published by the worker (the API publishes none, and the start of a
    # job someone waits for is written, not announced); a first job slower than the
    # progress interval (cold fork servers on a busy machine) also publishes one progress
    assert 1 <= value(scrape, "convertd_events_published_total") <= 2
    converts = value(scrape, "convertd_http_requests_total", method="POST", route="/v1/convert", status="200")
    assert converts == 1
    assert value(scrape, "convertd_workers") == 1
    # each process wrote its own figures into the data directory's metrics folder
    assert len({p.name.rsplit("_", 1)[-1] for p in (tmp_path / "d" / "metrics").glob("*.db")}) >= 2

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    tagged = [line for line in lines if line.get("request_id") == rid]
    loggers = {line["logger"] for line in tagged}
    assert {"convertd.access", "convertd.jobs"} <= loggers, tagged
    job_id = resp.headers["X-Job-Id"]
    assert {line["job_id"] for line in tagged if line["logger"] == "convertd.jobs"} == {job_id}

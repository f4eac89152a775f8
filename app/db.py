"""The asyncpg pool and the versioned SQL migrations in app/migrations/."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import asyncpg
from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

# One connection: a plain one, or one borrowed from the pool (`async with pool.acquire()`)
Conn = asyncpg.Connection | PoolConnectionProxy
# Where a single query may run: the pool itself or one connection
Executor = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy
MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_ID = 0x636F6E76  # advisory lock: two starting services never migrate at once


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, init=_init_connection, reset=_keep_session
    )


async def ping(pool: asyncpg.Pool) -> None:
    """A round trip to PostgreSQL: raises while it is out of reach."""
    await pool.fetchval("SELECT 1")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's reset query (UNLISTEN, RESET ALL, advisory unlock, CLOSE ALL) on every
    release: a round trip per query, for session state our pool connections never create
    (advisory locks and LISTEN run on connections of their own)."""


def migration_files() -> list[tuple[int, str, Path]]:
    found = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        match = re.fullmatch(r"(\d+)_(\w+)\.sql", path.name)
        if not match:
            raise RuntimeError(f"migration file name must be NNN_name.sql: {path.name}")
        found.append((int(match[1]), match[2], path))
    return found


async def migrate(url: str) -> list[str]:
    """Apply every migration not yet applied, in order, each in its own transaction."""
    conn = await asyncpg.connect(url)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, path in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            log.info("applied migration %03d_%s", version, name)
            applied.append(f"{version:03d}_{name}")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
        await conn.close()
    return applied

from __future__ import annotations

from app import db
from app.runtime import Runtime


async def test_migrations_apply_once_in_order(rt: Runtime) -> None:
    assert await db.migrate(rt.settings.database_url) == []  # type: ignore[arg-type]
    rows = await rt.pool.fetch("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in rows] == [v for v, _, _ in db.migration_files()]
    plans = {r["name"]: r for r in await rt.pool.fetch("SELECT * FROM plans")}
    assert plans["basic"]["calls_per_day"] == 2000 and plans["basic"]["calls_per_minute"] == 60
    assert plans["free"]["api_access"] is False and plans["pro"]["calls_per_day"] is None

"""Plain reads of the jobs table for the plumbing around the services: the event hub's
resync (app/runtime.py), the worker's log context (app/worker.py) and /metrics."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from app.models import Job

if TYPE_CHECKING:
    from app.db import Executor

STATUSES = ("pending", "processing", "finished", "failed", "expired")


async def by_ids(db: Executor, ids: list[uuid.UUID]) -> list[Job]:
    rows = await db.fetch("SELECT * FROM jobs WHERE id = ANY($1)", ids)
    return [Job.from_row(row) for row in rows]


async def count_by_status(db: Executor) -> dict[str, int]:
    """Jobs per status, "expired" for those whose files retention deleted; every status present."""
    rows = await db.fetch(
        "SELECT CASE WHEN expired_at IS NULL THEN status ELSE 'expired' END AS status,"
        " count(*) AS n FROM jobs GROUP BY 1"
    )
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({r["status"]: r["n"] for r in rows})
    return counts

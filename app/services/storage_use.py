"""What an account stores (uploads kept, outputs not yet expired or deleted) and its quota."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from app.db import Executor
from app.errors import ConvertdError, ErrorCode
from app.services.plans import human_duration

if TYPE_CHECKING:
    from app.auth.principal import Principal
    from app.models import Job
    from app.runtime import Runtime


@dataclasses.dataclass(frozen=True)
class StorageUse:
    used_bytes: int
    quota_bytes: int | None  # the plan's storage quota; None: unlimited
    retention_seconds: int | None  # the plan's retention; None: files are kept until deleted

    def body(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)


async def used_bytes(conn: Executor, account_id: int) -> int:
    return int(
        await conn.fetchval(
            "SELECT ((SELECT coalesce(sum(file_size), 0) FROM uploads WHERE account_id = $1)"
            " + (SELECT coalesce(sum(output_size), 0) FROM jobs"
            "    WHERE account_id = $1 AND output_path IS NOT NULL))::bigint",
            account_id,
        )
    )


async def storage_use(rt: Runtime, principal: Principal) -> StorageUse:
    plan = principal.plan
    return StorageUse(await used_bytes(rt.pool, principal.account_id), plan.storage_quota, plan.retention)


async def check_quota(rt: Runtime, principal: Principal, incoming: int) -> None:
    """Refuse (413) a request that would store past the plan's quota, or any that adds files
    (an upload, a conversion's output) once the account is at it. Checked when the request
    arrives: requests of one account that arrive together may pass together."""
    plan = principal.plan
    if plan.storage_quota is None:
        return
    used = await used_bytes(rt.pool, principal.account_id)
    if used + incoming <= plan.storage_quota and used < plan.storage_quota:
        return
    adding = f" and this request adds {incoming:,}" if incoming else ""
    expiry = (
        f", or wait for files to expire ({human_duration(plan.retention)} after their job ends)"
        if plan.retention
        else ""
    )
    raise ConvertdError(
        ErrorCode.STORAGE_QUOTA_EXCEEDED,
        f"The account stores {used:,} bytes{adding}; the {plan.name} plan allows "
        f"{plan.storage_quota:,} bytes.",
        hint=f"Delete jobs you no longer need (DELETE /v1/jobs/{{job_id}} or deleteJob){expiry}. "
        "GET /v1/keys/me shows the storage in use.",
    )


def expired(job: Job) -> ConvertdError:
    """A download of a job whose files the retention sweeper deleted (410)."""
    assert job.expired_at is not None
    return ConvertdError(
        ErrorCode.GONE,
        f"The job's files were deleted at {job.expired_at:%Y-%m-%d %H:%M} UTC, when its plan's "
        "retention ran out.",
        hint="Convert the file again, and download results before the retention ends "
        "(GET /v1/keys/me shows it).",
    )

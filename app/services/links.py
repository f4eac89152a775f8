"""The URLs of a job: its REST status, and a signed, expiring download that needs no key."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.models import Job
    from app.runtime import Runtime


@dataclasses.dataclass(frozen=True)
class JobLinks:
    status_url: str
    download_url: str


def links(rt: Runtime, job: Job, base_url: str) -> JobLinks:
    base = (rt.settings.public_url or base_url).rstrip("/")
    query = rt.storage.signed_query(str(job.id), rt.settings.download_url_ttl)
    return JobLinks(
        status_url=f"{base}/v1/status/{job.id}",
        download_url=f"{base}/v1/download/{job.id}?{query}",
    )

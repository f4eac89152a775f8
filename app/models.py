"""Plain records the services return: jobs, uploads, keys, plans. No I/O here."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from datetime import datetime
from typing import Any


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    FINISHED = "finished"
    FAILED = "failed"


TERMINAL_STATUSES = frozenset({JobStatus.FINISHED, JobStatus.FAILED})


@dataclasses.dataclass(frozen=True)
class Plan:
    name: str
    api_access: bool
    calls_per_day: int | None
    calls_per_minute: int | None
    max_file_size: int | None
    conversions: int | None
    retention: int | None = None  # seconds a job's files are kept after it ends; None: forever
    storage_quota: int | None = None  # bytes of uploads and outputs per account; None: unlimited
    max_pending: int | None = None  # jobs an account may have waiting; None: unlimited
    max_running: int | None = None  # jobs of one account processing at once; None: unlimited

    @classmethod
    def from_row(cls, row: Any, name_column: str = "name") -> Plan:
        values = {f.name: row[f.name] for f in dataclasses.fields(cls) if f.name != "name"}
        return cls(name=row[name_column], **values)


@dataclasses.dataclass(frozen=True)
class ApiKey:
    id: int
    kid: uuid.UUID
    account_id: int
    name: str
    prefix: str
    environment: str
    restriction_type: str
    allowed_ips: list[str]
    allowed_domains: list[str]
    allowed_endpoints: list[str]
    usage_count: int
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    conversion_limit: int | None = None  # on top of the plan's allowance; None: none
    conversions_used: int = 0
    jwt_secret_version: int = 0  # generations of the key's derived secrets (rotation)
    webhook_secret_version: int = 0

    @classmethod
    def from_row(cls, row: Any) -> ApiKey:
        return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls)})

    def public(self) -> dict[str, Any]:
        """The key as REST and the CLI show it (never its secret)."""
        return {
            "key_id": self.id,
            "kid": str(self.kid),
            "account_id": self.account_id,
            "name": self.name,
            "prefix": self.prefix,
            "environment": self.environment,
            "restriction_type": self.restriction_type,
            "allowed_ips": self.allowed_ips,
            "allowed_domains": self.allowed_domains,
            "allowed_endpoints": self.allowed_endpoints,
            "usage_count": self.usage_count,
            "conversions_used": self.conversions_used,
            "conversion_limit": self.conversion_limit,
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


@dataclasses.dataclass(frozen=True)
class Upload:
    id: int
    account_id: int
    token: str
    file_name: str
    file_size: int
    content_type: str | None
    storage_path: str
    created_at: datetime

    @property
    def file_path(self) -> str:
        """The public reference a later convert call passes back."""
        return f"{self.token}/{self.file_name}"

    @property
    def extension(self) -> str:
        from app.storage import extension_of

        return extension_of(self.file_name)

    @classmethod
    def from_row(cls, row: Any) -> Upload:
        return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class Job:
    id: uuid.UUID
    account_id: int
    filetype: str
    input_format: str
    output_format: str
    options: dict[str, Any]
    input_uploads: list[int]
    status: JobStatus
    progress: float
    error: str | None
    error_hint: str | None
    attempts: int
    version: int
    output_path: str | None
    output_name: str | None
    output_size: int | None
    output_items: list[str]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    webhook_url: str | None = None
    public_base: str | None = None
    webhook_status: str | None = None
    expired_at: datetime | None = None  # its files were deleted after the plan's retention
    request_id: str | None = None  # the API request that created it (X-Request-Id)
    output_notes: list[str] = dataclasses.field(default_factory=list)  # what the output lacks, why

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_row(cls, row: Any) -> Job:
        values = {f.name: row[f.name] for f in dataclasses.fields(cls)}
        values["status"] = JobStatus(values["status"])
        # progress is a 4-byte real in PostgreSQL: 0.4 comes back as 0.4000000059604645;
        # seven significant digits are what a real holds (0.03125 stays 0.03125)
        values["progress"] = float(f"{values['progress']:.7g}")
        values["input_uploads"] = list(values["input_uploads"])
        return cls(**values)

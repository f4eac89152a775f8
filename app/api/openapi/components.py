"""The document's shared components: the body schemas routes refer to, the error responses and
the security schemes."""

from __future__ import annotations

from typing import Any

from app.api.openapi.blocks import BOOL, INT, STR, STRS, TIME, Schema, nullable, obj, ok_body, ref
from app.errors import CredentialCode, ErrorCode
from app.models import JobStatus

SCHEMAS: dict[str, Schema] = {
    "Error": {
        **obj(
            ["error", "message", "hint"],
            error={"type": "string", "description": "Human-readable error name."},
            message={"type": "string", "description": "What went wrong."},
            hint=nullable("string", description="How to fix it, where we know."),
            error_code={"type": "string", "enum": [c.value for c in ErrorCode]},
            code={
                "type": "integer",
                "enum": [int(c) for c in CredentialCode],
                "description": "ConvertAPI's code for a refused credential: 4010 API key, 4011 access "
                "token, 4012 JWT, 4013 none sent, 4014 account inactive.",
            },
            field={"type": "string", "description": "The request field at fault."},
        ),
        "description": "Every error, on every /v1 route.",
    },
    "Upload": obj(
        ["file_path", "file_name", "file_size", "upload_id", "extension"],
        file_path={"type": "string", "description": "Pass it to /v1/convert as file_path."},
        file_name=STR,
        file_size=INT,
        upload_id=INT,
        extension=STR,
    ),
    "Queue": obj(
        ["jobs_ahead", "running", "max_running"],
        jobs_ahead=INT,
        running=INT,
        max_running=nullable("integer"),
    ),
    "JobStatus": obj(
        [
            "ok",
            "job_id",
            "status",
            "progress",
            "filetype",
            "input_format",
            "output_format",
            "created_at",
            "status_url",
        ],
        ok={"type": "boolean", "description": "false when the job failed"},
        job_id={"type": "string", "format": "uuid"},
        status={"type": "string", "enum": [s.value for s in JobStatus]},
        progress={"type": "number", "minimum": 0, "maximum": 1},
        filetype=STR,
        input_format=STR,
        output_format=STR,
        created_at=TIME,
        started_at=nullable("string", description="When a worker first took the job."),
        finished_at=nullable("string"),
        status_url=STR,
        download_url={"type": "string", "description": "Signed and expiring: needs no key."},
        file_name=nullable("string"),
        file_size=nullable("integer"),
        items={"type": "array", "items": STR},
        notes={
            "type": "array",
            "items": STR,
            "description": "What of the input is not in the output, and why (an archive's links).",
        },
        expired_at={**TIME, "description": "Its files were deleted after the plan's retention."},
        error=nullable("string"),
        hint=nullable("string"),
        queue=ref("Queue"),
        webhook_url=STR,
        webhook_status=nullable("string"),
    ),
    "Accepted": ok_body(
        job_id={"type": "string", "format": "uuid"},
        status={"type": "string", "enum": [s.value for s in JobStatus]},
        status_url=STR,
        download_url=STR,
    ),
    "RateLimits": obj(
        ["calls_per_day", "calls_per_minute", "used_today", "used_this_minute", "remaining_today"],
        calls_per_day=nullable("integer"),
        calls_per_minute=nullable("integer"),
        used_today=INT,
        used_this_minute=INT,
        remaining_today=nullable("integer"),
    ),
    "StorageUse": obj(
        ["used_bytes", "quota_bytes", "retention_seconds"],
        used_bytes=INT,
        quota_bytes=nullable("integer"),
        retention_seconds=nullable("integer"),
    ),
    "ApiKey": obj(
        ["key_id", "kid", "account_id", "name", "prefix", "restriction_type", "created_at"],
        key_id=INT,
        kid={"type": "string", "format": "uuid"},
        account_id=INT,
        name=STR,
        prefix=STR,
        environment=STR,
        restriction_type={"type": "string", "enum": ["all", "ip", "domain"]},
        allowed_ips=STRS,
        allowed_domains=STRS,
        allowed_endpoints=STRS,
        usage_count=INT,
        conversions_used=INT,
        conversion_limit=nullable("integer"),
        last_used_at=nullable("string"),
        created_at=TIME,
        revoked_at=nullable("string"),
    ),
    "KeySpec": obj(
        (),
        name=STR,
        environment={"type": "string", "enum": ["live", "test"]},
        restriction_type={"type": "string", "enum": ["all", "ip", "domain"]},
        allowed_ips=STRS,
        allowed_domains=STRS,
        allowed_endpoints=STRS,
        conversion_limit=nullable("integer", minimum=0),
    ),
    "Plan": obj(
        ["name", "api_access"],
        name=STR,
        api_access=BOOL,
        calls_per_day=nullable("integer"),
        calls_per_minute=nullable("integer"),
        max_file_size=nullable("integer"),
        conversions=nullable("integer"),
        max_running=nullable("integer"),
    ),
    "Account": obj(
        ["account_id", "name", "active", "plan", "conversions_used", "created_at"],
        account_id=INT,
        name=STR,
        active=BOOL,
        plan=ref("Plan"),
        conversions_used=INT,
        conversions_remaining=nullable("integer"),
        master_token_prefix=nullable("string"),
        master_token_created_at=nullable("string"),
        created_at=TIME,
    ),
}

# the error statuses and what they mean (the seed's table, plus ours)
ERRORS = {
    400: "Bad request: a missing or invalid parameter (see `field`).",
    401: "No credential, or one that is not valid (`code` 4010-4014).",
    403: "Refused: key restriction, plan without API access, HTTPS required, wrong kind of "
    "credential for the route, or the conversion quota is spent.",
    404: "No such job, file or key (another account's are as absent).",
    409: "Conflict: the job is not in a state for this (not finished yet, already ended).",
    410: "Gone: the job's files were deleted after the plan's retention.",
    413: "Too large: the file, the request, or the account's storage quota.",
    412: "tus: the request's Tus-Resumable is not 1.0.0.",
    415: "tus: a PATCH body that is not application/offset+octet-stream.",
    422: "The conversion failed (a synchronous convert).",
    423: "tus: another request is writing this upload right now.",
    429: "Too many requests: the plan's rate limit, or too many jobs waiting.",
    503: "A server behind Convertd is out of reach, or the queue is full: try again.",
}

# how a caller proves who it is; routes pick from these (blocks.OPEN, MASTER, SECRET_KEY)
SECURITY_SCHEMES: dict[str, Any] = {
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key, a JWT (POST /v1/token/jwt) or an access token.",
    },
    "ApiKeyQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "api_key",
        "description": "It ends up in logs: prefer a header. Never the master token.",
    },
    "MasterToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The account's master token (mt_...), for /v1/account routes only.",
    },
}

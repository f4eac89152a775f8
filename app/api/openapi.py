"""The OpenAPI 3.1 description of the REST API, served at GET /v1/openapi.json.

Every /v1 route and the probes are described here; tests/api/rest/test_openapi.py compares the
document with the application's route table, so a new route without a description fails.
GraphQL describes itself (introspection); the /convertapi/ routes speak ConvertAPI's
protocol, which ConvertAPI documents, and are left out.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from app.api.health import PROBE_PATHS
from app.api.request_context import base_url, runtime
from app.errors import CredentialCode, ErrorCode
from app.models import JobStatus

routes = web.RouteTableDef()
VERSION = "1.0"
JSON = "application/json"

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: Iterable[str] = (), **properties: Schema) -> Schema:
    return {"type": "object", "required": list(required), "properties": properties}


def _nullable(kind: str, **extra: Any) -> Schema:
    return {"type": [kind, "null"], **extra}


STR, INT, BOOL, NUM = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {"type": "number"}
TIME = {"type": "string", "format": "date-time"}
STRS = {"type": "array", "items": STR}
OK = {"const": True}


def _ok(**properties: Schema) -> Schema:
    """A successful body: {"ok": true, ...}, every listed property present."""
    return _obj(["ok", *properties], ok=OK, **properties)


_SCHEMAS: dict[str, Schema] = {
    "Error": {
        **_obj(
            ["error", "message", "hint"],
            error={"type": "string", "description": "Human-readable error name."},
            message={"type": "string", "description": "What went wrong."},
            hint=_nullable("string", description="How to fix it, where we know."),
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
    "Upload": _obj(
        ["file_path", "file_name", "file_size", "upload_id", "extension"],
        file_path={"type": "string", "description": "Pass it to /v1/convert as file_path."},
        file_name=STR,
        file_size=INT,
        upload_id=INT,
        extension=STR,
    ),
    "Queue": _obj(
        ["jobs_ahead", "running", "max_running"],
        jobs_ahead=INT,
        running=INT,
        max_running=_nullable("integer"),
    ),
    "JobStatus": _obj(
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
        status_url=STR,
        download_url={"type": "string", "description": "Signed and expiring: needs no key."},
        file_name=_nullable("string"),
        file_size=_nullable("integer"),
        items={"type": "array", "items": STR},
        expired_at={**TIME, "description": "Its files were deleted after the plan's retention."},
        error=_nullable("string"),
        hint=_nullable("string"),
        queue=_ref("Queue"),
        webhook_url=STR,
        webhook_status=_nullable("string"),
    ),
    "Accepted": _ok(
        job_id={"type": "string", "format": "uuid"},
        status={"type": "string", "enum": [s.value for s in JobStatus]},
        status_url=STR,
        download_url=STR,
    ),
    "RateLimits": _obj(
        ["calls_per_day", "calls_per_minute", "used_today", "used_this_minute", "remaining_today"],
        calls_per_day=_nullable("integer"),
        calls_per_minute=_nullable("integer"),
        used_today=INT,
        used_this_minute=INT,
        remaining_today=_nullable("integer"),
    ),
    "StorageUse": _obj(
        ["used_bytes", "quota_bytes", "retention_seconds"],
        used_bytes=INT,
        quota_bytes=_nullable("integer"),
        retention_seconds=_nullable("integer"),
    ),
    "ApiKey": _obj(
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
        conversion_limit=_nullable("integer"),
        last_used_at=_nullable("string"),
        created_at=TIME,
        revoked_at=_nullable("string"),
    ),
    "KeySpec": _obj(
        (),
        name=STR,
        environment={"type": "string", "enum": ["live", "test"]},
        restriction_type={"type": "string", "enum": ["all", "ip", "domain"]},
        allowed_ips=STRS,
        allowed_domains=STRS,
        allowed_endpoints=STRS,
        conversion_limit=_nullable("integer", minimum=0),
    ),
    "Plan": _obj(
        ["name", "api_access"],
        name=STR,
        api_access=BOOL,
        calls_per_day=_nullable("integer"),
        calls_per_minute=_nullable("integer"),
        max_file_size=_nullable("integer"),
        conversions=_nullable("integer"),
        max_running=_nullable("integer"),
    ),
    "Account": _obj(
        ["account_id", "name", "active", "plan", "conversions_used", "created_at"],
        account_id=INT,
        name=STR,
        active=BOOL,
        plan=_ref("Plan"),
        conversions_used=INT,
        conversions_remaining=_nullable("integer"),
        master_token_prefix=_nullable("string"),
        master_token_created_at=_nullable("string"),
        created_at=TIME,
    ),
}

# the error statuses and what they mean (the seed's table, plus ours)
_ERRORS = {
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
_AUTHED = (400, 401, 403, 429, 503)


def _responses(ok: dict[str, Any], *errors: int, authed: bool = True) -> dict[str, Any]:
    statuses = sorted({*(_AUTHED if authed else ()), *errors})
    return {**ok, **{str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}}


def _json(schema: Schema, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _path_param(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def _query(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


JOB_ID = _path_param("job_id", STR, "The job's id (a UUID).")
KEY_ID = _path_param("key_id", STR, "The key's id (a number).")
OPEN: list[dict[str, list[str]]] = []  # no credential
MASTER: list[dict[str, list[str]]] = [{"MasterToken": []}]
# the API key itself, never in a URL
SECRET_KEY: list[dict[str, list[str]]] = [{"ApiKeyHeader": []}, {"Bearer": []}]


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    tag: str,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    security: list[dict[str, list[str]]] | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = body
    if security is not None:
        op["security"] = security
    return op


def _body(schema: Schema, *, required: bool = False) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": schema}}}


def _convert_body(filetypes: list[str]) -> dict[str, Any]:
    common = {
        "filetype": {"type": "string", "enum": filetypes, "description": "Converter category."},
        "output_format": {"type": "string", "description": "Target extension, e.g. webp."},
        "input_format": {"type": "string", "description": "The input's format when its name does not say."},
        "webhook_url": {"type": "string", "description": "Told of the job's end (POST, signed)."},
        "url": {"type": "string", "description": "Import the input from this http(s) URL instead."},
        "wait": {
            "type": "integer",
            "minimum": 1,
            "maximum": 60,
            "description": "Seconds to wait for the end: answers the file itself (or, with "
            "Accept: application/json, the status) when it ends in time.",
        },
    }
    multipart = {
        "type": "object",
        "required": ["filetype", "output_format"],
        "properties": {
            "file": {
                "type": "array",
                "items": {"type": "string", "contentMediaType": "application/octet-stream"},
            },
            "file_path": {"type": "array", "items": STR, "description": "From an earlier /v1/upload."},
            "options": {
                "type": "string",
                "contentMediaType": JSON,
                "description": "Converter options as a JSON object (GET /v1/formats?options=1).",
            },
            **common,
        },
        "description": "Send `file`, `file_path` (either may repeat for converters taking several) or `url`.",
    }
    as_json = {
        "type": "object",
        "required": ["filetype", "output_format"],
        "properties": {
            "file_path": {"oneOf": [STR, {"type": "array", "items": STR}]},
            "options": {"type": "object"},
            **common,
        },
    }
    return {
        "required": True,
        "content": {"multipart/form-data": {"schema": multipart}, JSON: {"schema": as_json}},
    }


def _paths(filetypes: list[str]) -> dict[str, Any]:
    status = _json(_ref("JobStatus"))
    info = _op(
        "API version and endpoints",
        _responses(
            {"200": _json(_ok(name=STR, version=STR, docs_url=STR, endpoints=STRS, graphql=STR))},
            authed=False,
        ),
        tag="info",
        security=OPEN,
    )
    formats_ok = _ok(
        filetypes={
            "type": "object",
            "additionalProperties": _obj(
                ["input_formats", "output_formats"],
                input_formats=STRS,
                output_formats=STRS,
                conversions={"type": "object", "description": "input -> output -> options schema"},
            ),
        }
    )
    upload_body = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "contentMediaType": "application/octet-stream"},
                        }
                    },
                }
            }
        },
    }
    jwt_params = [
        _query("Kid", STR, "The key to sign for (its kid); the calling key by default."),
        _query("ExpiresInSec", INT, "Lifetime in seconds."),
        _query("ClientIp", STR, "Client IP(s) the token is bound to, comma-separated."),
    ]
    token_params = [
        _query("RequestCount", INT, "Requests each token allows."),
        _query("Lifetime", INT, "Seconds each token lives."),
        _query("Count", INT, "How many tokens to make."),
    ]
    key_public = _obj(["ok"], ok=OK)
    key_public["allOf"] = [_ref("ApiKey")]
    created_key = {
        "allOf": [
            _ref("ApiKey"),
            _obj(
                ["ok", "key"],
                ok=OK,
                key=STR,
                signing_secret=_nullable("string"),
                webhook_secret=_nullable("string"),
            ),
        ]
    }
    return {
        "/v1/": {"get": info},
        "/v1": {"get": {**info, "operationId": "info_no_slash"}},
        "/v1/openapi.json": {
            "get": _op(
                "This document",
                _responses({"200": _json({"type": "object"})}, authed=False),
                tag="info",
                security=OPEN,
            )
        },
        "/v1/formats": {
            "get": _op(
                "Input and output formats per filetype",
                _responses({"200": _json(formats_ok)}),
                tag="conversions",
                params=[
                    _query("options", {"type": "string", "enum": ["1", "true"]}, "Add each pair's options.")
                ],
            )
        },
        "/v1/upload": {
            "post": _op(
                "Upload one or more files",
                _responses({"200": _json(_ok(files={"type": "array", "items": _ref("Upload")}))}, 413),
                tag="conversions",
                body=upload_body,
            )
        },
        **_tus_paths(),
        "/v1/convert": {
            "post": _op(
                "Start a conversion",
                _responses(
                    {
                        "202": _json(_ref("Accepted"), "Queued: follow status_url or /v1/events."),
                        "200": {
                            "description": "With `wait`: the converted file (or its status as JSON).",
                            "content": {"*/*": {"schema": {}}},
                        },
                    },
                    404,
                    413,
                    422,
                ),
                tag="conversions",
                params=[
                    _query("wait", {"type": "integer", "minimum": 1, "maximum": 60}, "As the body's wait.")
                ],
                body=_convert_body(filetypes),
            )
        },
        "/v1/status/{job_id}": {
            "get": _op("A job's status", _responses({"200": status}, 404), tag="jobs", params=[JOB_ID])
        },
        "/v1/events/{job_id}": {
            "get": _op(
                "A job's status as server-sent events, to its end",
                _responses(
                    {
                        "200": {
                            "description": "`event: status` lines, data as /v1/status.",
                            "content": {"text/event-stream": {"schema": STR}},
                        }
                    },
                    404,
                ),
                tag="jobs",
                params=[JOB_ID],
            )
        },
        "/v1/cancel/{job_id}": {
            "post": _op(
                "Cancel a pending or running job",
                _responses({"200": status}, 404, 409),
                tag="jobs",
                params=[JOB_ID],
            )
        },
        "/v1/download/{job_id}": {
            "get": _op(
                "The converted file",
                _responses(
                    {"200": {"description": "The file.", "content": {"*/*": {"schema": {}}}}}, 404, 409, 410
                ),
                tag="jobs",
                params=[
                    JOB_ID,
                    _query("expires", STR, "From a signed download_url (then no key is needed)."),
                    _query("signature", STR, "From a signed download_url."),
                ],
            )
        },
        "/v1/jobs/{job_id}": {
            "delete": _op(
                "Delete an ended job and its files",
                _responses(
                    {"200": _json(_ok(job_id=STR, deleted={"const": True}, freed_bytes=INT))}, 404, 409
                ),
                tag="jobs",
                params=[JOB_ID],
            )
        },
        "/v1/keys/me": {
            "get": _op(
                "The calling key and its remaining quota",
                _responses(
                    {
                        "200": _json(
                            {
                                "allOf": [
                                    _ref("ApiKey"),
                                    _ok(
                                        plan=STR,
                                        max_running=_nullable("integer"),
                                        rate_limits=_ref("RateLimits"),
                                        storage=_ref("StorageUse"),
                                    ),
                                ]
                            }
                        )
                    }
                ),
                tag="keys",
            )
        },
        "/v1/token/jwt": {
            "post": _op(
                "Mint a JWT for browsers (ConvertAPI v2)",
                _responses(
                    {"200": _json(_ok(token=STR, kid=STR, expires_at=TIME, client_ip=_nullable("string")))},
                    404,
                ),
                tag="tokens",
                params=jwt_params,
                body=_body(_obj((), Kid=STR, ExpiresInSec=INT, ClientIp=STR)),
                security=[*SECRET_KEY, *MASTER],
                description="Parameters in the query or a JSON body, names case-insensitive.",
            )
        },
        "/v1/token/create": {
            "post": _op(
                "Create access tokens (ConvertAPI v1)",
                _responses(
                    {
                        "200": _json(
                            _ok(
                                code={"const": 2000},
                                Tokens={
                                    "type": "array",
                                    "items": _obj(
                                        ["Id", "RequestCount", "ValidUntil"],
                                        Id=STR,
                                        RequestCount=INT,
                                        ValidUntil=TIME,
                                    ),
                                },
                            )
                        )
                    }
                ),
                tag="tokens",
                params=token_params,
                body=_body(_obj((), RequestCount=INT, Lifetime=INT, Count=INT)),
                security=SECRET_KEY,
            )
        },
        "/v1/token/{token}": {
            "delete": _op(
                "Delete an access token",
                _responses({"200": _json(_ok(code={"const": 2001}))}, 404),
                tag="tokens",
                params=[_path_param("token", STR, "The access token.")],
                security=SECRET_KEY,
            )
        },
        "/v1/account": {
            "get": _op(
                "The account",
                _responses({"200": _json(_ok(account=_ref("Account")))}, 404),
                tag="account",
                security=MASTER,
            )
        },
        "/v1/account/consumption": {
            "get": _op(
                "Conversions and calls used, per key",
                _responses(
                    {
                        "200": _json(
                            _ok(
                                conversions_used=INT,
                                conversions_limit=_nullable("integer"),
                                conversions_remaining=_nullable("integer"),
                                rate_limits=_ref("RateLimits"),
                                keys={"type": "array", "items": _ref("ApiKey")},
                            )
                        )
                    },
                    404,
                ),
                tag="account",
                security=MASTER,
            )
        },
        "/v1/account/statistics": {
            "get": _op(
                "Requests and conversions per day and per conversion type",
                _responses(
                    {
                        "200": _json(
                            _ok(
                                since={"type": "string", "format": "date"},
                                days={"type": "array", "items": {"type": "object"}},
                                conversions={"type": "array", "items": {"type": "object"}},
                            )
                        )
                    }
                ),
                tag="account",
                params=[_query("days", INT, "How many days back (default 30).")],
                security=MASTER,
            )
        },
        "/v1/account/requests": {
            "get": _op(
                "The request log, newest first",
                _responses(
                    {
                        "200": _json(
                            _ok(
                                requests={"type": "array", "items": {"type": "object"}},
                                next_cursor=_nullable("string"),
                            )
                        )
                    }
                ),
                tag="account",
                params=[
                    _query("first", INT, "Page size (default 50)."),
                    _query("after", STR, "A next_cursor."),
                ],
                security=MASTER,
            )
        },
        "/v1/account/keys": {
            "get": _op(
                "The account's API keys",
                _responses({"200": _json(_ok(keys={"type": "array", "items": _ref("ApiKey")}))}),
                tag="account",
                security=MASTER,
            ),
            "post": _op(
                "Create an API key (its secret is shown once)",
                _responses({"201": _json(created_key)}),
                tag="account",
                body=_body(_ref("KeySpec"), required=True),
                security=MASTER,
            ),
        },
        "/v1/account/keys/{key_id}": {
            "patch": _op(
                "Change a key's name or restrictions",
                _responses({"200": _json(key_public)}, 404),
                tag="account",
                params=[KEY_ID],
                body=_body(_ref("KeySpec"), required=True),
                security=MASTER,
            ),
            "delete": _op(
                "Revoke a key",
                _responses({"200": _json(key_public)}, 404),
                tag="account",
                params=[KEY_ID],
                security=MASTER,
            ),
        },
        "/v1/account/keys/{key_id}/rotate": {
            "post": _op(
                "A new JWT-signing or webhook secret for a key (shown once)",
                _responses(
                    {
                        "200": _json(
                            {"allOf": [key_public, _obj(["rotated", "secret"], rotated=STR, secret=STR)]}
                        )
                    },
                    404,
                ),
                tag="account",
                params=[KEY_ID],
                body=_body(
                    _obj(["secret"], secret={"type": "string", "enum": ["jwt", "webhook"]}), required=True
                ),
                security=MASTER,
            )
        },
        "/v1/account/master-token": {
            "post": _op(
                "Replace the master token (the old one stops at once)",
                _responses({"200": _json(_ok(master_token=STR))}),
                tag="account",
                security=MASTER,
            )
        },
        "/healthz": {
            "get": _op(
                "Liveness",
                {"200": _json(_ok(status={"const": "alive"}))},
                tag="probes",
                security=OPEN,
            )
        },
        "/readyz": {
            "get": _op(
                "Readiness: PostgreSQL, Redis and workers",
                {
                    "200": _json(_readiness(), "Ready."),
                    "503": _json(_readiness(), "Not ready: see components."),
                },
                tag="probes",
                security=OPEN,
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics",
                {
                    "200": {
                        "description": "Text exposition format.",
                        "content": {"text/plain": {"schema": STR}},
                    }
                },
                tag="probes",
                security=OPEN,
            )
        },
    }


def _tus_paths() -> dict[str, Any]:
    """tus 1.0 resumable uploads (app/api/rest_tus.py): headers in, headers out."""
    resumable = {
        "name": "Tus-Resumable",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "enum": ["1.0.0"]},
        "description": "The tus version; anything else is a 412.",
    }
    upload_id = _path_param("upload_id", STR, "From the Location of the creating POST.")
    empty = {"description": "Done; the state is in the headers (Upload-Offset, Upload-Expires)."}
    tus_errors = (404, 409, 410, 412, 413, 423)
    return {
        "/v1/uploads/tus/": {
            "options": _op(
                "tus: the server's version, extensions and size limit",
                _responses({"204": {"description": "Tus-Version, Tus-Extension and Tus-Max-Size."}}),
                tag="uploads",
            ),
            "post": _op(
                "tus: create an upload",
                _responses({"201": {"description": "Created: its URL is in Location."}}, 412, 413),
                tag="uploads",
                params=[
                    resumable,
                    {
                        "name": "Upload-Length",
                        "in": "header",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                        "description": "The file's size in bytes.",
                    },
                    {
                        "name": "Upload-Metadata",
                        "in": "header",
                        "required": False,
                        "schema": STR,
                        "description": "tus metadata: `filename <base64>` names the file.",
                    },
                ],
            ),
        },
        "/v1/uploads/tus/{upload_id}": {
            "options": _op(
                "tus: the server's version, extensions and size limit",
                _responses({"204": {"description": "Tus-Version, Tus-Extension and Tus-Max-Size."}}),
                tag="uploads",
                params=[upload_id],
            ),
            "head": _op(
                "tus: the upload's offset",
                _responses(
                    {"200": {"description": "Upload-Offset, Upload-Length (X-File-Path once done)."}},
                    *tus_errors,
                ),
                tag="uploads",
                params=[upload_id, resumable],
            ),
            "get": _op(
                "The upload as JSON (not part of tus)",
                _responses(
                    {
                        "200": _json(
                            _ok(
                                id=STR,
                                file_name=_nullable("string"),
                                upload_length=INT,
                                upload_offset=INT,
                                expires_at=TIME,
                                finished=BOOL,
                                file_path=_nullable("string"),
                                upload_id=_nullable("integer"),
                            )
                        )
                    },
                    *tus_errors,
                ),
                tag="uploads",
                params=[upload_id, resumable],
            ),
            "patch": _op(
                "tus: append bytes at Upload-Offset",
                _responses({"204": empty}, *tus_errors, 415),
                tag="uploads",
                params=[
                    upload_id,
                    resumable,
                    {
                        "name": "Upload-Offset",
                        "in": "header",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                        "description": "Where these bytes go: the upload's current offset.",
                    },
                ],
                body={
                    "required": True,
                    "content": {
                        "application/offset+octet-stream": {"schema": {"type": "string", "format": "binary"}}
                    },
                },
            ),
            "delete": _op(
                "tus: delete an unfinished upload",
                _responses({"204": {"description": "Deleted."}}, *tus_errors),
                tag="uploads",
                params=[upload_id, resumable],
            ),
        },
    }


def _readiness() -> Schema:
    return _obj(
        ["ok", "status", "components", "engines"],
        ok=BOOL,
        status={"type": "string", "enum": ["ready", "not ready"]},
        components={"type": "object"},
        engines={"type": "object"},
    )


@functools.cache
def document() -> dict[str, Any]:
    """The description, without `servers` (the request's own URL is added when served)."""
    from converters.registry import registry

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Convertd REST API",
            "version": VERSION,
            "description": "File conversion. Upload, convert, follow the job, download. The same "
            "operations are in GraphQL at /graphql; ConvertAPI's protocol is at /convertapi/.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "security": [{"ApiKeyHeader": []}, {"Bearer": []}, {"ApiKeyQuery": []}],
        "paths": _paths(registry().filetypes),
        "components": {
            "securitySchemes": {
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
            },
            "schemas": _SCHEMAS,
            "responses": {
                f"E{status}": _json(_ref("Error"), description) for status, description in _ERRORS.items()
            },
        },
    }


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """(METHOD, path) of every operation the document describes."""
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


def served(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path template) of every route the document must describe: /v1 and the probes."""
    out = set()
    routes = list(app.router.routes())
    # the HEAD that aiohttp adds beside each GET (same handler) is not an operation of its own
    gets = {(r.resource, r.handler) for r in routes if r.method == "GET"}
    for route in routes:
        resource = route.resource
        if resource is None or route.method == "*":
            continue
        if route.method == "HEAD" and (resource, route.handler) in gets:
            continue
        path = resource.canonical
        if path == "/v1" or path.startswith("/v1/") or path in PROBE_PATHS:
            out.add((route.method, path))
    return out


@routes.get("/v1/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    server = (runtime(request).settings.public_url or base_url(request)).rstrip("/")
    return web.json_response({**document(), "servers": [{"url": server}]})

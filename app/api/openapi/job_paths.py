"""The document of the conversion routes: info, formats, upload, convert, and a job's routes.

tus uploads are in tus_paths.py (inserted after /v1/upload); keys, tokens and the account in
account_paths.py; the probes in probe_paths.py.
"""

from __future__ import annotations

from typing import Any

from app.api.openapi.blocks import (
    INT,
    JOB_ID,
    JSON,
    OPEN,
    STR,
    STRS,
    obj,
    ok_body,
    operation,
    path_param,
    query_param,
    ref,
    reply,
    responses,
)
from app.api.openapi.tus_paths import tus_paths


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


def job_paths(filetypes: list[str]) -> dict[str, Any]:
    """The info, formats, upload, convert and job routes (tus in between, as served).

    Long on purpose: one literal with an entry per route, read top to bottom like the route
    table; cutting it into functions would only scatter the routes.
    """
    status = reply(ref("JobStatus"))
    info = operation(
        "API version and endpoints",
        responses(
            {"200": reply(ok_body(name=STR, version=STR, docs_url=STR, endpoints=STRS, graphql=STR))},
            authed=False,
        ),
        tag="info",
        security=OPEN,
    )
    formats_ok = ok_body(
        filetypes={
            "type": "object",
            "additionalProperties": obj(
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
    return {
        "/v1/": {"get": info},
        "/v1": {"get": {**info, "operationId": "info_no_slash"}},
        "/v1/openapi.json": {
            "get": operation(
                "This document",
                responses({"200": reply({"type": "object"})}, authed=False),
                tag="info",
                security=OPEN,
            )
        },
        "/v1/formats": {
            "get": operation(
                "Input and output formats per filetype",
                responses({"200": reply(formats_ok)}),
                tag="conversions",
                params=[
                    query_param(
                        "options", {"type": "string", "enum": ["1", "true"]}, "Add each pair's options."
                    )
                ],
            )
        },
        "/v1/upload": {
            "post": operation(
                "Upload one or more files",
                responses({"200": reply(ok_body(files={"type": "array", "items": ref("Upload")}))}, 413),
                tag="conversions",
                body=upload_body,
            )
        },
        **tus_paths(),
        "/v1/convert": {
            "post": operation(
                "Start a conversion",
                responses(
                    {
                        "202": reply(ref("Accepted"), "Queued: follow status_url or /v1/events."),
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
                    query_param(
                        "wait", {"type": "integer", "minimum": 1, "maximum": 60}, "As the body's wait."
                    )
                ],
                body=_convert_body(filetypes),
            )
        },
        "/v1/convert/{pair}": {
            "post": operation(
                "Convert in one call (Enconvert's route)",
                responses(
                    {
                        "200": reply(
                            obj(
                                ["presigned_url", "object_key", "filename", "file_size"],
                                presigned_url=STR,
                                object_key=STR,
                                filename=STR,
                                file_size=INT,
                                conversion_time_seconds={"type": "number"},
                                job_id=STR,
                            ),
                            "Converted: presigned_url is the signed download link.",
                        ),
                        "202": reply(ref("Accepted"), "Still running after 60 s: follow status_url."),
                    },
                    404,
                    413,
                    422,
                ),
                tag="conversions",
                params=[path_param("pair", STR, "<from>-to-<to>, e.g. json-to-xml.")],
                body={
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": obj(
                                ["file"],
                                file={"type": "string", "contentMediaType": "application/octet-stream"},
                                options={"type": "string", "contentMediaType": JSON},
                            )
                        }
                    },
                },
            )
        },
        "/v1/status/{job_id}": {
            "get": operation("A job's status", responses({"200": status}, 404), tag="jobs", params=[JOB_ID])
        },
        "/v1/events/{job_id}": {
            "get": operation(
                "A job's status as server-sent events, to its end",
                responses(
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
            "post": operation(
                "Cancel a pending or running job",
                responses({"200": status}, 404, 409),
                tag="jobs",
                params=[JOB_ID],
            )
        },
        "/v1/download/{job_id}": {
            "get": operation(
                "The converted file",
                responses(
                    {"200": {"description": "The file.", "content": {"*/*": {"schema": {}}}}}, 404, 409, 410
                ),
                tag="jobs",
                params=[
                    JOB_ID,
                    query_param("expires", STR, "From a signed download_url (then no key is needed)."),
                    query_param("signature", STR, "From a signed download_url."),
                ],
            )
        },
        "/v1/jobs/{job_id}": {
            "delete": operation(
                "Delete an ended job and its files",
                responses(
                    {"200": reply(ok_body(job_id=STR, deleted={"const": True}, freed_bytes=INT))}, 404, 409
                ),
                tag="jobs",
                params=[JOB_ID],
            )
        },
    }

"""The document of the tus 1.0 resumable-upload routes (/v1/uploads/tus/...)."""

from __future__ import annotations

from typing import Any

from app.api.openapi.blocks import (
    BOOL,
    INT,
    STR,
    TIME,
    nullable,
    ok_body,
    operation,
    path_param,
    reply,
    responses,
)


def tus_paths() -> dict[str, Any]:
    """tus 1.0 resumable uploads (app/api/rest_tus.py): headers in, headers out.

    Long on purpose: one literal with an entry per route, read top to bottom like the route
    table; cutting it into functions would only scatter the routes.
    """
    resumable = {
        "name": "Tus-Resumable",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "enum": ["1.0.0"]},
        "description": "The tus version; anything else is a 412.",
    }
    upload_id = path_param("upload_id", STR, "From the Location of the creating POST.")
    empty = {"description": "Done; the state is in the headers (Upload-Offset, Upload-Expires)."}
    tus_errors = (404, 409, 410, 412, 413, 423)
    return {
        "/v1/uploads/tus/": {
            "options": operation(
                "tus: the server's version, extensions and size limit",
                responses({"204": {"description": "Tus-Version, Tus-Extension and Tus-Max-Size."}}),
                tag="uploads",
            ),
            "post": operation(
                "tus: create an upload",
                responses({"201": {"description": "Created: its URL is in Location."}}, 412, 413),
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
            "options": operation(
                "tus: the server's version, extensions and size limit",
                responses({"204": {"description": "Tus-Version, Tus-Extension and Tus-Max-Size."}}),
                tag="uploads",
                params=[upload_id],
            ),
            "head": operation(
                "tus: the upload's offset",
                responses(
                    {"200": {"description": "Upload-Offset, Upload-Length (X-File-Path once done)."}},
                    *tus_errors,
                ),
                tag="uploads",
                params=[upload_id, resumable],
            ),
            "get": operation(
                "The upload as JSON (not part of tus)",
                responses(
                    {
                        "200": reply(
                            ok_body(
                                id=STR,
                                file_name=nullable("string"),
                                upload_length=INT,
                                upload_offset=INT,
                                expires_at=TIME,
                                finished=BOOL,
                                file_path=nullable("string"),
                                upload_id=nullable("integer"),
                            )
                        )
                    },
                    *tus_errors,
                ),
                tag="uploads",
                params=[upload_id, resumable],
            ),
            "patch": operation(
                "tus: append bytes at Upload-Offset",
                responses({"204": empty}, *tus_errors, 415),
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
            "delete": operation(
                "tus: delete an unfinished upload",
                responses({"204": {"description": "Deleted."}}, *tus_errors),
                tag="uploads",
                params=[upload_id, resumable],
            ),
        },
    }

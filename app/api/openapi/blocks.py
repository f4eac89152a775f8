"""The building blocks of the OpenAPI document: schema shorthands, operations, parameters.

Every other module of this package writes its part of the document with these, so an
operation reads as its summary, its responses and its parameters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

JSON = "application/json"

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: Iterable[str] = (), **properties: Schema) -> Schema:
    return {"type": "object", "required": list(required), "properties": properties}


def nullable(kind: str, **extra: Any) -> Schema:
    return {"type": [kind, "null"], **extra}


STR, INT, BOOL, NUM = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {"type": "number"}
TIME = {"type": "string", "format": "date-time"}
STRS = {"type": "array", "items": STR}
OK = {"const": True}


def ok_body(**properties: Schema) -> Schema:
    """A successful body: {"ok": true, ...}, every listed property present."""
    return obj(["ok", *properties], ok=OK, **properties)


AUTHED = (400, 401, 403, 429, 503)


def responses(ok: dict[str, Any], *errors: int, authed: bool = True) -> dict[str, Any]:
    """The success responses plus the error statuses (refs to components); a route that needs a
    credential can also answer the AUTHED ones."""
    statuses = sorted({*(AUTHED if authed else ()), *errors})
    return {**ok, **{str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}}


def reply(schema: Schema, description: str = "OK") -> dict[str, Any]:
    """A response with a JSON body."""
    return {"description": description, "content": {JSON: {"schema": schema}}}


def path_param(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def query_param(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


JOB_ID = path_param("job_id", STR, "The job's id (a UUID).")
KEY_ID = path_param("key_id", STR, "The key's id (a number).")
OPEN: list[dict[str, list[str]]] = []  # no credential
MASTER: list[dict[str, list[str]]] = [{"MasterToken": []}]
# the API key itself, never in a URL
SECRET_KEY: list[dict[str, list[str]]] = [{"ApiKeyHeader": []}, {"Bearer": []}]


def operation(
    summary: str,
    responses: dict[str, Any],
    *,
    tag: str,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    security: list[dict[str, list[str]]] | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """One operation (a method of a path); `security` None means the document's default."""
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


def request_body(schema: Schema, *, required: bool = False) -> dict[str, Any]:
    """A JSON request body."""
    return {"required": required, "content": {JSON: {"schema": schema}}}

"""Every operation the APIs offer, under its REST routes and GraphQL root fields, and who may call it.

One table serves both transports: a key's allowed_endpoints name REST paths or GraphQL root
fields, and either grants the whole operation on both APIs. Administration is for the master
token only; everything else is for API keys and what is made from them.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from app.errors import ConvertdError, ErrorCode

if TYPE_CHECKING:
    from collections.abc import Iterable

    from app.auth.principal import Principal


@dataclasses.dataclass(frozen=True)
class Operation:
    name: str
    rest: tuple[str, ...] = ()  # route templates, as aiohttp's canonical form
    graphql: tuple[str, ...] = ()  # root field names
    admin: bool = False  # master token only
    secret_key: bool = False  # the API key itself, not a JWT or access token made from it
    master_too: bool = False  # the master token may call it as well


OPERATIONS = (
    Operation("formats", ("/v1/formats",), ("formats", "formatOptions")),
    # the ConvertAPI routes (app/api/rest_convertapi.py) are the same operations as REST's
    Operation("upload", ("/v1/upload", "/convertapi/upload"), ("upload",)),
    Operation(
        "convert", ("/v1/convert", "/v1/convert/{pair}", "/convertapi/convert/{src}/to/{dst}"), ("convert",)
    ),
    Operation("status", ("/v1/status/{job_id}", "/v1/events/{job_id}"), ("job", "jobs", "jobUpdates")),
    Operation("cancel", ("/v1/cancel/{job_id}",), ("cancelJob",)),
    Operation("delete", ("/v1/jobs/{job_id}",), ("deleteJob",)),
    Operation("download", ("/v1/download/{job_id}",)),
    Operation("key info", ("/v1/keys/me", "/convertapi/user"), ("me", "quota")),
    # a key mints only for itself, the master token for any key of its account (services/tokens.py)
    Operation(
        "jwt", ("/v1/token/jwt", "/convertapi/token/jwt"), ("createJwt",), secret_key=True, master_too=True
    ),
    Operation(
        "access tokens",
        ("/v1/token/create", "/v1/token/{token}", "/convertapi/token/create", "/convertapi/token/{token}"),
        ("createAccessTokens", "deleteAccessToken"),
        secret_key=True,
    ),
    Operation("account", ("/v1/account",), ("account",), admin=True),
    Operation("consumption", ("/v1/account/consumption",), ("consumption",), admin=True),
    Operation("statistics", ("/v1/account/statistics",), ("statistics",), admin=True),
    Operation("request log", ("/v1/account/requests",), ("requestLog",), admin=True),
    Operation(
        "keys",
        ("/v1/account/keys", "/v1/account/keys/{key_id}", "/v1/account/keys/{key_id}/rotate"),
        ("keys", "createKey", "renameKey", "updateKey", "revokeKey", "rotateKeySecret"),
        admin=True,
    ),
    Operation("master token", ("/v1/account/master-token",), ("refreshMasterToken",), admin=True),
)
_BY_ROUTE = {route: op for op in OPERATIONS for route in op.rest}
_BY_FIELD = {field: op for op in OPERATIONS for field in op.graphql}
# introspection and __typename reveal nothing an endpoint restriction protects
INTROSPECTION = frozenset({"__schema", "__type"})  # CONVERTD_INTROSPECTION=0 refuses these
OPEN_FIELDS = frozenset({"__typename", *INTROSPECTION})  # no operation: never counted or refused
# What a caller with no valid credentials may ask GraphQL for: nothing else. The list is
# explicit so that a new root field is closed to anonymous callers by default.
ANONYMOUS_FIELDS = frozenset({"__typename", *INTROSPECTION})


def for_route(template: str) -> Operation:
    return _BY_ROUTE.get(template) or Operation(template, rest=(template,))


def for_field(name: str) -> Operation:
    return _BY_FIELD.get(name) or Operation(name, graphql=(name,))


def _names(op: Operation) -> set[str]:
    """What an allowed_endpoints entry may say to mean this operation."""
    names = set(op.graphql)
    for route in op.rest:
        names.add(route.rstrip("/"))
        names.add(route.split("/{", 1)[0].rstrip("/"))  # "/v1/status" for "/v1/status/{job_id}"
    return names


def _normalised(entry: str) -> str:
    entry = entry.strip()
    if entry.startswith("/"):
        return entry.rstrip("/")
    return entry.rsplit(".", 1)[-1]  # "Mutation.convert" -> "convert"


def endpoint_allowed(allowed: Iterable[str], op: Operation, path: str | None = None) -> bool:
    """An entry names the operation (a route or field of it), or is this request's very
    path: Enconvert's allowed_endpoints list one conversion, /v1/convert/json-to-xml."""
    names = _names(op)
    here = path.rstrip("/") if path else None
    return any(_normalised(entry) in names or _normalised(entry) == here for entry in allowed)


def forbidden(message: str, hint: str) -> ConvertdError:
    return ConvertdError(ErrorCode.FORBIDDEN, message, hint)


def require(principal: Principal, op: Operation, *, path: str | None = None) -> None:
    """Refuse the operation to this caller: wrong kind of credential, or outside the key's list."""
    if op.admin and principal.method != "master":
        raise forbidden(
            f"'{op.name}' is an administrative operation and needs the account's master token.",
            "Send the master token (mt_...) as Authorization: Bearer; API keys, JWTs and access "
            "tokens are for conversions. The operator issues it with `convertd accounts master-token`.",
        )
    if principal.method == "master" and op.master_too:
        return
    if not op.admin and principal.method == "master":
        raise forbidden(
            "The master token is for administration only.",
            "Use an API key, a JWT or an access token for conversions and job calls.",
        )
    if op.secret_key and principal.method != "api_key":
        raise forbidden(
            f"'{op.name}' needs the API key itself, not a {principal.method.replace('_', ' ')}.",
            "Call this from your server with the secret key (X-API-Key or Authorization: Bearer).",
        )
    key = principal.key
    if key is not None and key.allowed_endpoints and not endpoint_allowed(key.allowed_endpoints, op, path):
        raise forbidden(
            f"This key may not call '{op.name}'.",
            f"The key is limited to: {', '.join(key.allowed_endpoints)}. Use a key allowed to call it.",
        )

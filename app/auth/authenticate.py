"""One path from RequestInfo to Principal for REST, GraphQL over HTTP and over websocket."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.auth import keys
from app.auth.principal import Principal
from app.errors import ConvertdError, ErrorCode
from app.models import ApiKey, Plan

if TYPE_CHECKING:
    from app.auth.request import RequestInfo
    from app.runtime import Runtime

_KEY_QUERY = """
SELECT k.*, a.name AS account_name, a.active, p.name AS plan_name, p.api_access,
       p.calls_per_day, p.calls_per_minute, p.max_file_size, p.conversions
FROM api_keys k JOIN accounts a ON a.id = k.account_id JOIN plans p ON p.name = a.plan
WHERE k.key_hash = $1
"""


def unauthenticated(message: str, hint: str, legacy_code: int) -> ConvertdError:
    return ConvertdError(ErrorCode.UNAUTHENTICATED, message, hint, legacy_code=legacy_code)


async def authenticate(rt: Runtime, info: RequestInfo) -> Principal:
    credential = info.credential
    if not credential:
        raise unauthenticated(
            "No API key was sent.",
            "Send your key as the X-API-Key header, as Authorization: Bearer <key>, "
            "or as ?api_key=<key>; create one with `convertd keys create --name NAME`.",
            4013,
        )
    row = await rt.pool.fetchrow(_KEY_QUERY, keys.digest(credential))
    if row is None or not keys.matches(credential, row["key_hash"]):
        raise unauthenticated(
            "The API key is not valid.",
            "Check that the key is complete and has not been revoked.",
            4010,
        )
    if row["revoked_at"] is not None:
        raise unauthenticated("The API key has been revoked.", "Create a new key and use it instead.", 4010)
    if not row["active"]:
        raise unauthenticated("The account is inactive.", "Ask the operator to reactivate the account.", 4014)
    plan = Plan(
        name=row["plan_name"],
        api_access=row["api_access"],
        calls_per_day=row["calls_per_day"],
        calls_per_minute=row["calls_per_minute"],
        max_file_size=row["max_file_size"],
        conversions=row["conversions"],
    )
    usage = await rt.pool.fetchrow(
        "UPDATE api_keys SET usage_count = usage_count + 1, last_used_at = now() WHERE id = $1"
        " RETURNING usage_count, last_used_at",
        row["id"],
    )
    row = {**row, **usage}
    return Principal(
        account_id=row["account_id"],
        account_name=row["account_name"],
        plan=plan,
        method="api_key",
        key=ApiKey.from_row(row),
    )

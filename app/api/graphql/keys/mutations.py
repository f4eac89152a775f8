from __future__ import annotations

from typing import Any

import strawberry

from app.api.graphql.context import Context
from app.api.graphql.keys.types import (
    ApiKey,
    CreatedKey,
    CreateKeyInput,
    KeySecret,
    RotatedSecret,
    UpdateKeyInput,
)
from app.services import keys as keys_service


def _given(value: Any) -> Any:
    return keys_service.KEEP if value is strawberry.UNSET else value


@strawberry.type
class KeyMutations:
    @strawberry.mutation(description="Create a key for the account (master token). Its secret is shown once.")
    async def create_key(self, info: strawberry.Info[Context, None], input: CreateKeyInput) -> CreatedKey:
        ctx = info.context
        spec = keys_service.KeySpec(
            name=input.name,
            environment=input.environment,
            restriction_type=input.restriction_type,
            allowed_ips=input.allowed_ips,
            allowed_domains=input.allowed_domains,
            allowed_endpoints=input.allowed_endpoints,
            conversion_limit=input.conversion_limit,
        )
        created = await keys_service.create_key(
            ctx.rt.pool, ctx.principal.account_id, spec, server_secret=ctx.rt.settings.secret
        )
        return CreatedKey.from_model(created)

    @strawberry.mutation(description="Rename a key (master token).")
    async def rename_key(self, info: strawberry.Info[Context, None], id: int, name: str) -> ApiKey:
        ctx = info.context
        return ApiKey.from_model(
            await keys_service.update_key(ctx.rt.pool, ctx.principal.account_id, id, name=name)
        )

    @strawberry.mutation(description="Change a key's name, restrictions or conversion limit (master token).")
    async def update_key(
        self, info: strawberry.Info[Context, None], id: int, input: UpdateKeyInput
    ) -> ApiKey:
        ctx = info.context
        key = await keys_service.update_key(
            ctx.rt.pool,
            ctx.principal.account_id,
            id,
            name=_given(input.name),
            restriction_type=_given(input.restriction_type),
            allowed_ips=_given(input.allowed_ips),
            allowed_domains=_given(input.allowed_domains),
            allowed_endpoints=_given(input.allowed_endpoints),
            conversion_limit=_given(input.conversion_limit),
        )
        return ApiKey.from_model(key)

    @strawberry.mutation(description="Revoke a key; it is refused from the next request on (master token).")
    async def revoke_key(self, info: strawberry.Info[Context, None], id: int) -> ApiKey:
        ctx = info.context
        return ApiKey.from_model(await keys_service.revoke_key(ctx.rt.pool, ctx.principal.account_id, id))

    @strawberry.mutation(
        description="Replace a key's JWT signing secret or webhook secret without revoking the key "
        "(master token). JWTs signed with the old JWT secret are refused from now on."
    )
    async def rotate_key_secret(
        self, info: strawberry.Info[Context, None], id: int, secret: KeySecret
    ) -> RotatedSecret:
        ctx = info.context
        key, value = await keys_service.rotate_secret(
            ctx.rt.pool, ctx.principal.account_id, id, secret.value, ctx.rt.settings.secret
        )
        return RotatedSecret(secret=value, api_key=ApiKey.from_model(key))

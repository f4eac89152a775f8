from __future__ import annotations

import strawberry

from app.api.graphql.context import Context
from app.api.graphql.keys.types import ApiKey, RateLimits
from app.services import keys as keys_service
from app.services import quota as quota_service
from app.services import storage_use


@strawberry.type
class KeyQueries:
    @strawberry.field(description="The API key making this call, as GET /v1/keys/me.")
    async def me(self, info: strawberry.Info[Context, None]) -> ApiKey:
        ctx = info.context
        found = await keys_service.me(ctx.rt, ctx.principal)
        storage = await storage_use.storage_use(ctx.rt, ctx.principal)
        me = ApiKey.from_model(found.key, found.plan.name, found.rate_limits, storage)
        me.max_running = found.plan.max_running
        return me

    @strawberry.field(description="The account's rate-limit quota (calls per day and per minute).")
    async def quota(self, info: strawberry.Info[Context, None]) -> RateLimits:
        ctx = info.context
        return RateLimits.from_model(await quota_service.quota(ctx.rt, ctx.principal))

    @strawberry.field(description="The account's keys, revoked ones included (master token).")
    async def keys(self, info: strawberry.Info[Context, None]) -> list[ApiKey]:
        ctx = info.context
        return [
            ApiKey.from_model(k) for k in await keys_service.account_keys(ctx.rt, ctx.principal.account_id)
        ]

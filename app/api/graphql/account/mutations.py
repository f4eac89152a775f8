from __future__ import annotations

import strawberry

from app.api.graphql.context import Context
from app.services import accounts


@strawberry.type
class AccountMutations:
    @strawberry.mutation(
        description="A new master token; the one making this call stops working at once. Shown once."
    )
    async def refresh_master_token(self, info: strawberry.Info[Context, None]) -> str:
        ctx = info.context
        return await accounts.refresh_master_token(ctx.rt, ctx.principal)

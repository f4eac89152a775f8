from __future__ import annotations

import strawberry

from app.api.graphql.context import Context
from app.api.graphql.keys.types import ApiKey
from app.services import keys as keys_service


@strawberry.type
class KeyQueries:
    @strawberry.field(description="The API key making this call, as GET /v1/keys/me.")
    def me(self, info: strawberry.Info[Context, None]) -> ApiKey:
        principal = info.context.principal
        return ApiKey.from_model(keys_service.current_key(principal), principal.plan.name)

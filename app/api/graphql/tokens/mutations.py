from __future__ import annotations

import strawberry

from app.api.graphql.context import Context
from app.api.graphql.tokens.types import AccessToken, Jwt
from app.services import tokens as tokens_service


@strawberry.type
class TokenMutations:
    @strawberry.mutation(
        description="Mint a JWT for the calling key (the master token: any key of its account), "
        "as POST /v1/token/jwt."
    )
    async def create_jwt(
        self,
        info: strawberry.Info[Context, None],
        kid: str,
        expires_in_sec: int,
        client_ip: str | None = None,
    ) -> Jwt:
        ctx = info.context
        minted = await tokens_service.create_jwt(ctx.rt, ctx.principal, kid, expires_in_sec, client_ip)
        return Jwt(
            token=minted.token, kid=str(minted.kid), expires_at=minted.expires_at, client_ip=minted.client_ip
        )

    @strawberry.mutation(description="Create access tokens (as POST /v1/token/create). Needs the API key.")
    async def create_access_tokens(
        self,
        info: strawberry.Info[Context, None],
        request_count: int = tokens_service.DEFAULT_REQUEST_COUNT,
        lifetime: int = tokens_service.DEFAULT_LIFETIME,
        count: int = tokens_service.DEFAULT_TOKENS_PER_CALL,
    ) -> list[AccessToken]:
        ctx = info.context
        created = await tokens_service.create_access_tokens(
            ctx.rt, ctx.principal, request_count=request_count, lifetime=lifetime, count=count
        )
        return [
            AccessToken(id=t.token, request_count=t.request_count, valid_until=t.valid_until) for t in created
        ]

    @strawberry.mutation(description="Delete an access token at once. Needs the API key (the secret).")
    async def delete_access_token(self, info: strawberry.Info[Context, None], id: str) -> bool:
        ctx = info.context
        await tokens_service.delete_access_token(ctx.rt, ctx.principal, id)
        return True

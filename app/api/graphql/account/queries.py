from __future__ import annotations

import strawberry

from app.api.graphql.account.types import Account, Consumption, RequestLogPage, Statistics
from app.api.graphql.context import Context
from app.services import accounts, usage


@strawberry.type
class AccountQueries:
    @strawberry.field(description="The account: plan, conversions, master token (master token).")
    async def account(self, info: strawberry.Info[Context, None]) -> Account:
        ctx = info.context
        return Account.from_model(await accounts.account(ctx.rt, ctx.principal))

    @strawberry.field(description="Current consumption (master token).")
    async def consumption(self, info: strawberry.Info[Context, None]) -> Consumption:
        ctx = info.context
        return Consumption.from_model(await accounts.consumption(ctx.rt, ctx.principal))

    @strawberry.field(description="Statistics per day and per conversion type (master token).")
    async def statistics(self, info: strawberry.Info[Context, None], days: int = 30) -> Statistics:
        ctx = info.context
        return Statistics.from_model(await usage.statistics(ctx.rt, ctx.principal, days))

    @strawberry.field(description="The request log, newest first (master token).")
    async def request_log(
        self,
        info: strawberry.Info[Context, None],
        first: int = usage.REQUEST_LOG_PAGE,
        after: str | None = None,
    ) -> RequestLogPage:
        ctx = info.context
        page = await usage.request_log(ctx.rt, ctx.principal, first=first, after=after)
        return RequestLogPage.from_model(page)

"""The root schema, assembled from the feature packages."""

from __future__ import annotations

import strawberry
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter

from app.api.graphql.formats.queries import FormatQueries
from app.api.graphql.jobs.mutations import JobMutations
from app.api.graphql.jobs.queries import JobQueries
from app.api.graphql.jobs.subscriptions import JobSubscriptions
from app.api.graphql.keys.queries import KeyQueries


@strawberry.type
class Query(JobQueries, FormatQueries, KeyQueries):
    pass


@strawberry.type
class Mutation(JobMutations):
    pass


@strawberry.type
class Subscription(JobSubscriptions):
    pass


schema = strawberry.Schema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    extensions=[lambda: QueryDepthLimiter(max_depth=10), lambda: MaxAliasesLimiter(max_alias_count=30)],
)

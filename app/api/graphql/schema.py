"""The root schema, assembled from the feature packages."""

from __future__ import annotations

from typing import Any

import strawberry
from aiohttp import web
from graphql import GraphQLError
from strawberry.extensions import MaskErrors, ParserCache

from app.api.graphql.access import AccessExtension
from app.api.graphql.account.mutations import AccountMutations
from app.api.graphql.account.queries import AccountQueries
from app.api.graphql.formats.queries import FormatQueries
from app.api.graphql.jobs.mutations import JobMutations
from app.api.graphql.jobs.queries import JobQueries
from app.api.graphql.jobs.subscriptions import JobSubscriptions
from app.api.graphql.keys.mutations import KeyMutations
from app.api.graphql.keys.queries import KeyQueries
from app.api.graphql.limits import MAX_TOKENS, CheckedDocuments
from app.api.graphql.tokens.mutations import TokenMutations
from app.errors import ConvertdError, ErrorCode
from app.outages import is_outage, unavailable


@strawberry.type
class Query(JobQueries, FormatQueries, KeyQueries, AccountQueries):
    pass


@strawberry.type
class Mutation(JobMutations, TokenMutations, KeyMutations, AccountMutations):
    pass


@strawberry.type
class Subscription(JobSubscriptions):
    pass


class ConvertdSchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        # a refused request is the caller's business, not an error in our logs
        ours = [
            e for e in errors if isinstance(e.original_error, ConvertdError) and e.original_error.status < 500
        ]
        _pass_headers(errors, execution_context)
        for error in errors:
            _explain(error)
        super().process_errors([e for e in errors if e not in ours], execution_context)


def _explain(error: GraphQLError) -> None:
    """GraphQL's own refusals (syntax, unknown fields, limits) carry the code, status and
    hint ours do, so a client reads every refusal the same way."""
    if error.original_error is not None or error.extensions:
        return
    if error.message.startswith("Syntax Error: Document contains more than"):
        hint = f"A document may hold {MAX_TOKENS:,} tokens: ask for fewer fields, or split the work."
    elif error.message.startswith("Syntax Error"):
        hint = "The document is not valid GraphQL where `locations` points; GraphiQL at /graphql checks it."
    else:
        hint = "Check the document against the schema: GraphiQL at /graphql shows it, or schema.graphql."
    error.extensions = {"code": ErrorCode.BAD_REQUEST.value, "status": 400, "hint": hint}


def _pass_headers(errors: list[GraphQLError], execution_context: Any) -> None:
    """A refusal's headers (Retry-After of a 429 or 503) reach the HTTP answer, as on REST."""
    response = getattr(getattr(execution_context, "context", None), "response", None)
    if not isinstance(response, web.StreamResponse) or isinstance(response, web.WebSocketResponse):
        return
    for error in errors:
        if isinstance(error.original_error, ConvertdError):
            response.headers.update(error.original_error.headers)


class ConvertdErrors(MaskErrors):
    """Errors that are not ours are masked; an unreachable server is told as such (503)."""

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        if error.original_error is None or not is_outage(error.original_error):
            return super().anonymise_error(error)
        err = unavailable(error.original_error)
        return GraphQLError(err.message, error.nodes, error.source, error.positions, error.path, err)


def _internal(error: GraphQLError) -> bool:
    """Our own errors and GraphQL's (syntax, validation) speak to the caller; the rest hide."""
    original = error.original_error
    return original is not None and not isinstance(original, ConvertdError)


# also applied to payloads rendered once for many subscribers (jobs/fanout.py)
MASK_ERRORS: dict[str, Any] = {"should_mask_error": _internal, "error_message": "Internal server error."}

schema = ConvertdSchema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    extensions=[
        lambda: ParserCache(maxsize=512),
        CheckedDocuments,
        AccessExtension,
        lambda: ConvertdErrors(**MASK_ERRORS),
    ],
)

"""The GraphQL access extension is closed by default: a caller with no valid credentials gets
only the fields on operations.ANONYMOUS_FIELDS, whether or not a resolver reads the caller."""

from __future__ import annotations

import strawberry
from aiohttp import web
from graphql import OperationType, parse

from app.api.graphql.access import AccessExtension, anonymous_refusals
from app.api.graphql.context import Context
from app.api.graphql.schema import schema
from app.auth import operations
from app.auth.authenticate import identify
from app.errors import ConvertdError, ErrorCode
from app.runtime import Runtime
from tests.conftest import Account


def _root_fields() -> list[tuple[str, str]]:
    core = schema._schema
    found = []
    for kind, root in (
        (OperationType.QUERY, core.query_type),
        (OperationType.MUTATION, core.mutation_type),
        (OperationType.SUBSCRIPTION, core.subscription_type),
    ):
        assert root is not None
        found += [(kind.value, name) for name in root.fields]
    return found


def test_every_root_field_of_the_schema_is_refused_to_an_anonymous_caller() -> None:
    fields = _root_fields()
    assert len(fields) > 20 and ("query", "formats") in fields and ("mutation", "convert") in fields
    for kind, name in fields:
        errors = anonymous_refusals(parse(f"{kind} {{ {name} }}"), None)
        assert len(errors) == 1, (kind, name)
        original = errors[0].original_error
        assert isinstance(original, ConvertdError) and original.code is ErrorCode.UNAUTHENTICATED
    # the explicit open list, and nothing else
    assert anonymous_refusals(parse("{ __typename }"), None) == []
    assert {"__typename", "__schema", "__type"} == operations.ANONYMOUS_FIELDS


def _context(rt: Runtime) -> Context:
    # the request object is not read by the extension; the response only names the transport
    return Context(request=None, response=web.Response(), rt=rt, base_url="http://localhost")  # type: ignore[arg-type]


async def test_a_new_resolver_that_never_reads_the_caller_is_refused_anonymously(
    rt: Runtime, account: Account
) -> None:
    calls: list[str] = []

    @strawberry.type
    class Query:
        @strawberry.field
        def brand_new(self) -> str:  # forgets to read info.context.principal
            calls.append("ran")
            return "open"

    own = strawberry.Schema(query=Query, extensions=[AccessExtension])

    anonymous = _context(rt)
    refusal = ConvertdError(ErrorCode.UNAUTHENTICATED, "No API key was sent.", "Send one.")
    anonymous.authenticated(None, refusal)
    result = await own.execute("{ brandNew }", context_value=anonymous)
    assert calls == [] and result.data is None
    assert result.errors and result.errors[0].original_error is refusal
    result = await own.execute("{ __typename }", context_value=anonymous)
    assert result.errors is None and result.data == {"__typename": "Query"}

    # the same field for a caller with a key runs: the extension refuses the anonymous only
    known = _context(rt)
    known.authenticated(await identify(rt, account.key, None), None)
    result = await own.execute("{ brandNew }", context_value=known)
    assert result.errors is None and result.data == {"brandNew": "open"} and calls == ["ran"]

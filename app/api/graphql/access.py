"""GraphQL's half of the access rules: each root field is an operation (app/auth/operations.py).

After validation and before anything runs, the root fields the caller may not use are
refused: administration without the master token, conversions with it, fields outside a
key's allowed_endpoints. A caller with no valid credentials gets only the fields on
operations.ANONYMOUS_FIELDS (closed by default: a new resolver is refused to anonymous callers
whether or not it reads the principal). On a websocket each operation is admitted again (app/auth). This
holds for queries, mutations and subscriptions alike, over HTTP and the websocket. The
extension also writes each operation's line in the request log.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)
from strawberry.extensions import SchemaExtension

from app.auth import operations
from app.auth.authenticate import authenticate, limit
from app.errors import ConvertdError, ErrorCode

if TYPE_CHECKING:
    from app.api.graphql.context import Context
    from app.auth.principal import Principal


def _root_fields(
    selection_set: SelectionSetNode, fragments: dict[str, FragmentDefinitionNode], seen: set[str]
) -> Iterator[FieldNode]:
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            yield selection
        elif isinstance(selection, InlineFragmentNode):
            yield from _root_fields(selection.selection_set, fragments, seen)
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
            seen.add(selection.name.value)
            fragment = fragments.get(selection.name.value)
            if fragment is not None:
                yield from _root_fields(fragment.selection_set, fragments, seen)


def root_field_names(document: Any, operation_name: str | None) -> list[str]:
    """The root fields of the operation that runs, for the request log."""
    names: list[str] = []
    for definition in getattr(document, "definitions", ()):
        if isinstance(definition, OperationDefinitionNode) and (
            operation_name is None or (definition.name and definition.name.value == operation_name)
        ):
            names += [s.name.value for s in definition.selection_set.selections if isinstance(s, FieldNode)]
            break
    return names


INTROSPECTION_OFF = ConvertdError(
    ErrorCode.FORBIDDEN,
    "Introspection is switched off on this server.",
    hint="The schema is published with the server (schema.graphql); ask its operator.",
)


def refusals(
    document: DocumentNode, principal: Principal, refusal: ConvertdError | None, *, introspection: bool = True
) -> list[GraphQLError]:
    """The root fields of every operation in the document that this caller may not use."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    errors: list[GraphQLError] = []
    for node in document.definitions:
        if not isinstance(node, OperationDefinitionNode):
            continue
        if refusal is not None:
            errors.append(GraphQLError(refusal.message, node, original_error=refusal))
            continue
        for field in _root_fields(node.selection_set, fragments, set()):
            name = field.name.value
            if name in operations.INTROSPECTION and not introspection:
                off = INTROSPECTION_OFF
                errors.append(GraphQLError(off.message, field, original_error=off))
                continue
            if name in operations.OPEN_FIELDS:
                continue
            try:
                operations.require(principal, operations.for_field(name))
            except ConvertdError as err:
                errors.append(GraphQLError(err.message, field, original_error=err))
    return errors


NO_CREDENTIALS = ConvertdError(
    ErrorCode.UNAUTHENTICATED,
    "No valid credentials were sent.",
    hint="Send your key as the X-API-Key header or as Authorization: Bearer <key>.",
)


def anonymous_refusals(
    document: DocumentNode, error: ConvertdError | None, *, introspection: bool = True
) -> list[GraphQLError]:
    """For a caller with no valid credentials: every root field not on the explicit list of
    open fields, refused with the authentication error."""
    refusal = error or NO_CREDENTIALS
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    errors: list[GraphQLError] = []
    for node in document.definitions:
        if not isinstance(node, OperationDefinitionNode):
            continue
        for field in _root_fields(node.selection_set, fragments, set()):
            name = field.name.value
            if name in operations.INTROSPECTION and not introspection:
                errors.append(
                    GraphQLError(INTROSPECTION_OFF.message, field, original_error=INTROSPECTION_OFF)
                )
            elif name not in operations.ANONYMOUS_FIELDS:
                errors.append(GraphQLError(refusal.message, field, original_error=refusal))
    return errors


class AccessExtension(SchemaExtension):
    _logged = False
    _principal: Principal | None = None
    _refusal: ConvertdError | None = None

    async def on_operation(self) -> Any:
        ctx: Context = self.execution_context.context
        self._principal, self._refusal = ctx.principal_or_none, None
        if self._principal is not None and ctx.ws_info is not None:
            # every operation on a websocket is a call like any HTTP request: admitted and
            # counted again, so a revoked key, a refreshed master token or a spent limit
            # stops an open connection too
            try:
                self._principal = await authenticate(ctx.rt, ctx.ws_info)
            except ConvertdError as err:
                self._refusal = err
        yield
        await self._log()

    async def on_validate(self) -> Any:
        # after the document's own validation (limits.CheckedDocuments, earlier in the list)
        # and before anything runs; a document GraphQL refuses is refused for that first
        ec = self.execution_context
        ctx: Context = ec.context
        introspection = ctx.rt.settings.introspection
        if self._principal is None and not ec.pre_execution_errors and ec.graphql_document:
            refused = anonymous_refusals(ec.graphql_document, ctx.auth_error, introspection=introspection)
            if refused:
                ec.pre_execution_errors = refused
        elif self._principal is not None and not ec.pre_execution_errors and ec.graphql_document:
            refused = refusals(
                ec.graphql_document, self._principal, self._refusal, introspection=introspection
            )
            if refused:
                ec.pre_execution_errors = refused
            else:
                await self._count_fields(ec.graphql_document, ec.operation_name)
        yield

    async def _count_fields(self, document: DocumentNode, operation_name: str | None) -> None:
        """Each root field is a call, as each would be a REST request: the request itself
        was counted when it was admitted, the others are counted here."""
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        fields = [
            field.name.value
            for node in document.definitions
            if isinstance(node, OperationDefinitionNode)
            and (operation_name is None or (node.name and node.name.value == operation_name))
            for field in _root_fields(node.selection_set, fragments, set())
            if field.name.value not in operations.OPEN_FIELDS
        ]
        if len(fields) > 1 and self._principal is not None:
            ctx: Context = self.execution_context.context
            try:
                await limit(ctx.rt, self._principal, cost=len(fields) - 1)
            except ConvertdError as err:
                self.execution_context.pre_execution_errors = [GraphQLError(err.message, original_error=err)]

    async def on_execute(self) -> Any:
        yield
        # a subscription is logged when it starts, not when its stream ends
        if self._operation_type() == "subscription":
            await self._log()

    def _operation_type(self) -> str:
        try:
            return self.execution_context.operation_type.value
        except Exception:  # unparsable document: there is no operation
            return "query"

    async def _log(self) -> None:
        if self._logged:
            return
        self._logged = True
        ctx: Context = self.execution_context.context
        ec = self.execution_context
        errors = list(getattr(ec.result, "errors", None) or ec.pre_execution_errors or [])
        status, code = (400, "BAD_REQUEST") if ec.pre_execution_errors else (200, None)
        for error in errors:
            original = getattr(error, "original_error", None)
            if isinstance(original, ConvertdError):
                status, code = original.status, original.code.value
                break
        fields = ",".join(root_field_names(ec.graphql_document, ec.operation_name)) or "?"
        ctx.rt.request_log.record(
            ctx.trace,
            transport=ctx.transport,
            route=f"{self._operation_type()} {fields}",
            status=status,
            error_code=code,
        )

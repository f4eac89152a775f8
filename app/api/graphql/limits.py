"""Validating documents, once each: GraphQL's own rules and what one document may cost.

Tokens are bounded while parsing; depth, aliases and fields (`MaxFields` counts each
fragment as often as it is spread, so a few nested fragments cannot multiply into millions
of fields) by validation rules. The rules are fixed, so the outcome depends on the document
text alone: `CheckedDocuments` validates each distinct text once per process and keeps the
answer (clients send the same few documents over and over: validating a subscription took
more CPU than anything else the API did for a job). Who may run which root field is checked
per request, after this (app/api/graphql/access.py).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
    specified_rules,
)
from strawberry.extensions import SchemaExtension
from strawberry.extensions.max_aliases import create_validator as alias_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_rule
from strawberry.schema.schema import validate_document

MAX_TOKENS = 5_000
MAX_DEPTH = 10
MAX_ALIASES = 30
MAX_FIELDS = 1_000


class MaxFields(ValidationRule):
    def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
        fragments = {
            d.name.value: d
            for d in self.context.document.definitions
            if isinstance(d, FragmentDefinitionNode)
        }
        costs: dict[str, int] = {}

        def cost(selection_set: SelectionSetNode | None, visiting: frozenset[str]) -> int:
            total = 0
            for selection in selection_set.selections if selection_set else ():
                if isinstance(selection, FieldNode):
                    total += 1 + cost(selection.selection_set, visiting)
                elif isinstance(selection, InlineFragmentNode):
                    total += cost(selection.selection_set, visiting)
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    if name in visiting or name not in fragments:
                        continue  # cycles and unknown fragments are the standard rules' errors
                    if name not in costs:
                        costs[name] = cost(fragments[name].selection_set, visiting | {name})
                    total += costs[name]
                if total > MAX_FIELDS:
                    return total  # enough to refuse; stop counting
            return total

        if cost(node.selection_set, frozenset()) > MAX_FIELDS:
            self.report_error(
                GraphQLError(
                    f"The operation selects more than {MAX_FIELDS} fields.",
                    node,
                    extensions={
                        "code": "BAD_REQUEST",
                        "status": 400,
                        "hint": "Ask for fewer fields, or split the work over several requests.",
                    },
                )
            )


RULES = (*specified_rules, depth_rule(MAX_DEPTH, None), alias_rule(MAX_ALIASES), MaxFields)
CACHED_DOCUMENTS = 512


class CheckedDocuments(SchemaExtension):
    _known: collections.OrderedDict[str, list[GraphQLError]] = collections.OrderedDict()

    def on_operation(self) -> Iterator[None]:
        self.execution_context.parse_options["max_tokens"] = MAX_TOKENS
        yield

    def on_validate(self) -> Iterator[None]:
        ec = self.execution_context
        text = ec.query or ""
        errors = self._known.get(text)
        if errors is None:
            assert ec.graphql_document is not None
            errors = validate_document(ec.schema._schema, ec.graphql_document, RULES)
            self._known[text] = errors
            if len(self._known) > CACHED_DOCUMENTS:
                self._known.popitem(last=False)
        else:
            self._known.move_to_end(text)
        # set (even when empty), strawberry's own validation is skipped
        ec.pre_execution_errors = list(errors)
        yield

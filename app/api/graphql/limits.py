"""What one GraphQL document may cost: tokens, depth, aliases and fields.

Strawberry's limiters bound the tokens (before parsing finishes), the depth and the aliases;
`MaxFields` bounds what execution would resolve, counting each fragment as often as it is
spread, so a few nested fragments cannot multiply into millions of fields.
"""

from __future__ import annotations

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
)

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

"""schema.graphql is the schema the code serves, and every operation document is valid."""

from __future__ import annotations

from graphql import GraphQLError, parse, validate

from app.api.graphql.schema import schema
from tests.conftest import OPERATIONS, ROOT


def test_schema_file_matches_the_code() -> None:
    printed = schema.as_str().strip() + "\n"
    on_disk = (ROOT / "schema.graphql").read_text()
    assert on_disk == printed, (
        "schema.graphql drifted from the code; regenerate it with "
        "`python -c 'from app.api.graphql.schema import schema; print(schema.as_str())' > schema.graphql`"
    )


def test_operation_documents_validate_against_the_schema() -> None:
    documents = sorted(OPERATIONS.glob("*.graphql"))
    assert documents
    for path in documents:
        errors = validate(schema._schema, parse(path.read_text()))
        assert not errors, f"{path.name}: {errors}"


def test_internal_errors_are_masked_and_ours_are_not() -> None:
    from app.api.graphql.schema import _internal
    from app.errors import ConvertdError, ErrorCode

    assert _internal(GraphQLError("boom", original_error=RuntimeError("db password wrong")))
    ours = ConvertdError(ErrorCode.NOT_FOUND, "Job not found.", "Check the id.")
    assert not _internal(GraphQLError("Job not found.", original_error=ours))
    assert not _internal(GraphQLError("Cannot query field 'x'"))

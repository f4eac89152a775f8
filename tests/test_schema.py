"""schema.graphql is the schema the code serves, and every operation document is valid."""

from __future__ import annotations

from app.api.graphql.schema import schema
from graphql import parse, validate
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

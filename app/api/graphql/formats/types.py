from __future__ import annotations

import strawberry

from app.api.graphql.scalars import JSON
from app.services import formats as formats_service


@strawberry.type(description="Formats one input format can become.")
class Conversion:
    filetype: strawberry.Private[str]
    input_format: str
    output_formats: list[str]

    @strawberry.field(description="JSON schema of the options, per output format.")
    def options(self) -> list[ConversionOptions]:
        return [
            ConversionOptions(
                output_format=dst,
                schema=JSON(formats_service.options_schema(self.filetype, self.input_format, dst)),
            )
            for dst in self.output_formats
        ]


@strawberry.type
class ConversionOptions:
    output_format: str
    schema: JSON


@strawberry.type(description="What one filetype (converter family) reads and writes.")
class FiletypeFormats:
    filetype: str
    input_formats: list[str]
    output_formats: list[str]
    conversions: list[Conversion]

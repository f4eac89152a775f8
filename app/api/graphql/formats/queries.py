from __future__ import annotations

import strawberry

from app.api.graphql.formats.types import Conversion, FiletypeFormats
from app.api.graphql.scalars import JSON
from app.services import formats as formats_service


@strawberry.type
class FormatQueries:
    @strawberry.field(description="Every filetype with its formats, as GET /v1/formats.")
    def formats(self) -> list[FiletypeFormats]:
        # for authenticated callers only, like every field: the access extension refuses others
        return [
            FiletypeFormats(
                filetype=filetype,
                input_formats=group["input_formats"],
                output_formats=group["output_formats"],
                conversions=[
                    Conversion(filetype=filetype, input_format=src, output_formats=dsts)
                    for src, dsts in formats_service.pairs(filetype).items()
                ],
            )
            for filetype, group in formats_service.formats().items()
        ]

    @strawberry.field(description="JSON schema of the options one conversion accepts.")
    def format_options(self, filetype: str, input_format: str, output_format: str) -> JSON:
        return JSON(formats_service.options_schema(filetype, input_format, output_format))

from __future__ import annotations

import strawberry


@strawberry.type(description="Formats one input format can become.")
class Conversion:
    input_format: str
    output_formats: list[str]


@strawberry.type(description="What one filetype (converter family) reads and writes.")
class FiletypeFormats:
    filetype: str
    input_formats: list[str]
    output_formats: list[str]
    conversions: list[Conversion]

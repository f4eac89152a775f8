"""Structured data: json, yaml, toml, xml (trees) and csv, tsv, xlsx (tables).

Every input becomes plain Python data (dicts, lists, scalars); tables become a list of
records keyed by the header row. Parsers are the safe ones only: YAML's safe loader,
defusedxml for XML (entities, external DTDs and XInclude are never resolved), calamine for
xlsx after a check that the sheets do not declare more cells than we can hold (two cells,
at A1 and XFD1048576, make calamine allocate half a terabyte).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from converters.base import ConversionError, Converter, Option, Result, Task
from converters.filetypes.data.readers import READERS, check_xlsx
from converters.filetypes.data.writers import WRITERS
from converters.sniff import check_declared

TREE = ("json", "yaml", "toml", "xml")
TABLE = ("csv", "tsv", "xlsx")
FORMATS = TREE + TABLE
DELIMITERS = (",", ";", "|", "\t", ":")


class DataConverter(Converter):
    filetype: ClassVar[str] = "data"
    engine: ClassVar[str] = "python"

    def pairs(self) -> Mapping[str, frozenset[str]]:
        return {src: frozenset(f for f in FORMATS if f != src) for src in FORMATS}

    def options(self, input_format: str, output_format: str) -> Mapping[str, Option]:
        opts: dict[str, Option] = {}
        if output_format in ("json", "xml"):
            opts["indent"] = Option(
                "integer",
                "Spaces per indentation level (0: compact).",
                default=2,
                minimum=0,
                maximum=8,
            )
        if output_format == "yaml":
            opts["indent"] = Option(
                "integer", "Spaces per indentation level.", default=2, minimum=2, maximum=8
            )
        if output_format == "xml":
            opts["root"] = Option(
                "string",
                "Name of the root element. By default the "
                "data's single top-level key, if it has one, else 'root'.",
            )
        if input_format == "csv":
            opts["delimiter"] = Option(
                "string",
                "Field separator of the CSV input ('auto' guesses it).",
                default="auto",
                enum=("auto", *DELIMITERS),
            )
        elif output_format == "csv":
            opts["delimiter"] = Option(
                "string", "Field separator of the CSV output.", default=",", enum=DELIMITERS
            )
        if input_format in TABLE:
            opts["header"] = Option(
                "boolean",
                "The first row holds column names: rows become objects keyed by them (else arrays).",
                default=True,
            )
        if input_format in ("csv", "tsv"):
            opts["infer_types"] = Option(
                "boolean",
                "Turn cells that are plain numbers into numbers (01234 stays text).",
                default=True,
            )
        if input_format == "xlsx":
            opts["sheet"] = Option(
                "string",
                "Sheet to read: its name, or its number (1 is the first). Default: the first sheet.",
            )
        elif output_format == "xlsx":
            opts["sheet"] = Option("string", "Name of the sheet to write.", default="Sheet1")
        return opts

    def check(self, task: Task) -> None:
        check_declared(task.inputs[0], task.input_format)
        if task.input_format == "xlsx":
            check_xlsx(task.inputs[0])

    def convert(self, task: Task) -> Result:
        src = task.inputs[0]
        out = task.workdir / f"{src.stem or 'data'}.{task.output_format}"
        if out.exists() or out in task.inputs:
            out = task.workdir / f"{src.stem or 'data'}-converted.{task.output_format}"
        try:
            data = READERS[task.input_format](src, task.options)
            task.progress(0.5)
            WRITERS[task.output_format](data, out, task.options)
        except RecursionError as exc:
            out.unlink(missing_ok=True)
            raise ConversionError(
                "The data is nested too deeply.", "Flatten the structure (fewer levels)."
            ) from exc
        except (TypeError, ValueError) as exc:
            out.unlink(missing_ok=True)
            raise ConversionError(
                f"The data cannot be written as {task.output_format}: {str(exc)[:200]}",
                "Some values have no equivalent in that format; try json or yaml.",
            ) from exc
        task.progress(1.0)
        return Result(out)

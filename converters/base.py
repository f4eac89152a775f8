"""The contract between the service and every conversion engine.

A converter is a plain object: it says which formats it reads and writes, which options
each pair takes (as a small JSON-schema-like description), and converts files on disk.
It never imports the web, database or Redis layers; the service runs it inside
`converters.sandbox.parent`, a child process with resource limits, and hears of its progress
through `Task.progress`.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

Progress = Callable[[float], None]
"""Called with a fraction from 0 to 1 as the work advances; cheap to call often."""

OptionType = Literal["integer", "number", "string", "boolean", "array"]


class ConversionError(Exception):
    """The input cannot be converted as asked. `message` is shown to the user as is."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def said(exc: BaseException, path: Path, limit: int = 200) -> str:
    """What a library said about `path`, naming the file only: libraries quote the full path
    (Pillow: "cannot identify image file '/data/work/JOB/in/a.png'"), and the job's folder
    on the server is none of the caller's business."""
    return str(exc).replace(str(path), path.name)[:limit]


class RequestError(ValueError):
    """The request itself is wrong (unknown pair, bad option): refused before any job exists."""

    def __init__(self, message: str, hint: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.field = field


@dataclasses.dataclass(frozen=True)
class Option:
    """One converter option, described the way `formats` publishes it."""

    type: OptionType
    description: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[Any, ...] | None = None
    items: OptionType | None = None  # element type of an "array" option

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "description": self.description}
        if self.default is not None:
            out["default"] = self.default
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.type == "array":
            # the allowed values are the elements' (JSON Schema): an `enum` beside
            # "type": "array" would only admit a list equal to one of them
            items: dict[str, Any] = {"type": self.items or "string"}
            if self.enum is not None:
                items["enum"] = list(self.enum)
            out["items"] = items
        elif self.enum is not None:
            out["enum"] = list(self.enum)
        return out


@dataclasses.dataclass
class Task:
    """What a converter is handed: inputs already inside its private working directory."""

    inputs: list[Path]
    input_format: str
    output_format: str
    options: dict[str, Any]  # validated, with defaults filled in
    workdir: Path
    progress: Progress = lambda fraction: None


@dataclasses.dataclass
class Result:
    """One output file. Several outputs travel as one zip, `items` naming its members;
    `notes` tell the job's owner what of the input is not in it, and why (an archive's
    links, left out)."""

    path: Path
    items: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits for the child process that runs one conversion."""

    memory_bytes: int = 2 * 1024**3
    cpu_seconds: int = 300
    wall_seconds: int = 600
    output_bytes: int = 4 * 1024**3


class Converter(abc.ABC):
    """One engine for one filetype. Subclasses are registered in `converters.registry`."""

    filetype: ClassVar[str]
    engine: ClassVar[str]
    multi_input: ClassVar[bool] = False  # accepts several inputs (images -> one pdf, ...)
    content_agnostic: ClassVar[bool] = False  # never interprets content (checksums): no sniffing
    uses_office: ClassVar[bool] = False  # may convert through LibreOffice (the worker's warm pool)
    limits: ClassVar[Limits] = Limits()

    def unavailable(self) -> str | None:
        """Why this engine cannot run on this machine, or None when it can."""
        return None

    def unavailable_formats(self) -> Mapping[str, str]:
        """Formats this engine would handle but cannot here, with the reason (for doctor)."""
        return {}

    @abc.abstractmethod
    def pairs(self) -> Mapping[str, frozenset[str]]:
        """Input format -> output formats it can become (lower-case extensions)."""

    def options(self, input_format: str, output_format: str) -> Mapping[str, Option]:
        """The options this pair accepts."""
        return {}

    def check_options(  # noqa: B027 - optional hook
        self, input_format: str, output_format: str, options: Mapping[str, Any]
    ) -> None:
        """Refuse option values their schema cannot describe (a colour, a page range) while
        the request is answered, with RequestError: a 400, not a job that fails later."""

    def check(self, task: Task) -> None:  # noqa: B027 - optional hook
        """Refuse hostile or mismatched input before decoding it (raise ConversionError)."""

    @abc.abstractmethod
    def convert(self, task: Task) -> Result:
        """Write the output inside task.workdir and return it; raise ConversionError."""

    async def run_jailed(
        self,
        input_format: str,
        output_format: str,
        options: dict[str, Any],
        inputs: list[Path],
        workdir: Path,
        limits: Limits,
    ) -> Result | None:
        """The whole job run by the worker in an engine that is itself a sandbox with every
        layer of a job's child, or None (the default) to run `check` + `convert` in a child.

        Only LibreOffice has one: its warm instances' jails (converters/tools/office/direct.py).
        Called by converters.sandbox.parent.run in the worker, so it must never read the
        input's content itself."""
        return None

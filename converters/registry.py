"""Which filetype turns which format into which, with which options.

The registry is built once from the converters whose engines are present on this machine;
the missing ones are kept aside for `convertd doctor` and never offered in `formats`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any

from converters.base import Converter, Option, RequestError

# module:Class of every converter; a module that fails to import counts as a missing engine.
CONVERTERS: tuple[str, ...] = (
    "converters.filetypes.image.converter:ImageConverter",
    "converters.filetypes.hash:HashConverter",
    "converters.filetypes.data.converter:DataConverter",
    "converters.filetypes.audio:AudioConverter",
    "converters.filetypes.video:VideoConverter",
    "converters.filetypes.document:DocumentConverter",
    "converters.filetypes.pdf.converter:PdfConverter",
    "converters.filetypes.ebook:EbookConverter",
    "converters.filetypes.archive.converter:ArchiveConverter",
)


def normalize_format(fmt: str) -> str:
    fmt = fmt.strip().lower().lstrip(".")
    return {"jpeg": "jpg", "tif": "tiff", "htm": "html", "yml": "yaml"}.get(fmt, fmt)


class Registry:
    def __init__(self, converters: Iterable[Converter], missing: Mapping[str, str] | None = None):
        self._by_filetype: dict[str, list[Converter]] = {}
        self.missing: dict[str, str] = dict(missing or {})
        for conv in converters:
            reason = conv.unavailable()
            if reason:
                self.missing[f"{conv.filetype}:{conv.engine}"] = reason
                continue
            self._by_filetype.setdefault(conv.filetype, []).append(conv)

    @property
    def filetypes(self) -> list[str]:
        return sorted(self._by_filetype)

    def formats(self) -> dict[str, dict[str, list[str]]]:
        """Per filetype, every input and output format, as GET /v1/formats shows them."""
        out: dict[str, dict[str, list[str]]] = {}
        for filetype, convs in sorted(self._by_filetype.items()):
            inputs: set[str] = set()
            outputs: set[str] = set()
            for conv in convs:
                for src, dsts in conv.pairs().items():
                    inputs.add(src)
                    outputs |= dsts
            out[filetype] = {"input_formats": sorted(inputs), "output_formats": sorted(outputs)}
        return out

    def pairs(self, filetype: str) -> dict[str, list[str]]:
        result: dict[str, set[str]] = {}
        for conv in self._by_filetype.get(filetype, []):
            for src, dsts in conv.pairs().items():
                result.setdefault(src, set()).update(dsts)
        return {src: sorted(dsts) for src, dsts in sorted(result.items())}

    def conversions(self, filetype: str) -> dict[str, dict[str, dict[str, Any]]]:
        """Input format -> output format -> options schema, for one filetype."""
        return {
            src: {dst: self.options_schema(filetype, src, dst) for dst in dsts}
            for src, dsts in self.pairs(filetype).items()
        }

    def unavailable(self) -> dict[str, str]:
        """Engines and formats missing on this machine, with reasons (`convertd doctor`)."""
        out = dict(self.missing)
        for convs in self._by_filetype.values():
            for conv in convs:
                for fmt, reason in conv.unavailable_formats().items():
                    out[f"{conv.filetype}:{fmt}"] = reason
        return out

    def find(self, filetype: str, input_format: str, output_format: str) -> Converter:
        filetype = filetype.strip().lower()
        src, dst = normalize_format(input_format), normalize_format(output_format)
        convs = self._by_filetype.get(filetype)
        if not convs:
            raise RequestError(
                f"Unknown filetype '{filetype}'.",
                hint=f"Use one of: {', '.join(self.filetypes)}.",
                field="filetype",
            )
        for conv in convs:
            if dst in conv.pairs().get(src, ()):
                return conv
        pairs = self.pairs(filetype)
        if src not in pairs:
            raise RequestError(
                f"The {filetype} converter cannot read '{src}' files.",
                hint=f"{filetype} reads: {', '.join(pairs)}.",
                field="input_format",
            )
        raise RequestError(
            f"The {filetype} converter cannot turn '{src}' into '{dst}'.",
            hint=f"'{src}' can become: {', '.join(pairs[src])}.",
            field="output_format",
        )

    def options(self, filetype: str, input_format: str, output_format: str) -> dict[str, Option]:
        conv = self.find(filetype, input_format, output_format)
        return dict(conv.options(normalize_format(input_format), normalize_format(output_format)))

    def options_schema(self, filetype: str, input_format: str, output_format: str) -> dict[str, Any]:
        opts = self.options(filetype, input_format, output_format)
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {name: opt.schema() for name, opt in opts.items()},
        }

    def validate(
        self, filetype: str, input_format: str, output_format: str, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Check options against the pair's schema; return them with defaults filled in."""
        conv = self.find(filetype, input_format, output_format)
        src, dst = normalize_format(input_format), normalize_format(output_format)
        allowed = dict(conv.options(src, dst))
        if not isinstance(options, Mapping):
            raise RequestError("Options must be a JSON object.", hint='e.g. {"quality": 80}')
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            names = ", ".join(sorted(allowed)) or "none"
            raise RequestError(
                f"Unknown option '{unknown[0]}' for {input_format} -> {output_format}.",
                hint=f"Options for this conversion: {names}.",
                field=unknown[0],
            )
        values: dict[str, Any] = {}
        for name, opt in allowed.items():
            if name in options and options[name] is not None:
                values[name] = _coerce(name, opt, options[name])
            elif opt.default is not None:
                values[name] = opt.default
        conv.check_options(src, dst, values)
        return values


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "integer": (int,),
    "number": (int, float),
    "string": (str,),
    "boolean": (bool,),
    "array": (list, tuple),
}


def _describe(opt: Option) -> str:
    if opt.enum is not None:
        return "one of " + ", ".join(map(str, opt.enum))
    if opt.minimum is not None or opt.maximum is not None:
        low = "" if opt.minimum is None else f"{opt.minimum:g}"
        high = "" if opt.maximum is None else f"{opt.maximum:g}"
        return f"{'an integer' if opt.type == 'integer' else 'a number'} from {low} to {high}"
    return f"a {opt.type}"


def _coerce(name: str, opt: Option, value: Any) -> Any:
    def bad() -> RequestError:
        return RequestError(
            f"Invalid value {value!r} for option '{name}'.",
            hint=f"'{name}' must be {_describe(opt)}: {opt.description}",
            field=name,
        )

    # bool is an int in Python; keep true/false out of numeric options and vice versa
    if isinstance(value, bool) != (opt.type == "boolean"):
        raise bad()
    if not isinstance(value, _PY_TYPES[opt.type]):
        raise bad()
    if opt.type == "array":
        assert isinstance(value, (list, tuple))  # _PY_TYPES["array"], checked just above
        elem = _PY_TYPES.get(opt.items or "string", (object,))
        if not all(isinstance(v, elem) and not isinstance(v, bool) for v in value):
            raise bad()
        if opt.enum is not None and not set(value) <= set(opt.enum):
            raise bad()
        return list(value)
    if opt.enum is not None and value not in opt.enum:
        raise bad()
    if isinstance(value, (int, float)):
        if opt.minimum is not None and value < opt.minimum:
            raise bad()
        if opt.maximum is not None and value > opt.maximum:
            raise bad()
    return value


def _load(spec: str) -> Converter:
    module, _, cls = spec.partition(":")
    converter: Converter = getattr(importlib.import_module(module), cls)()
    return converter


def build() -> Registry:
    converters: list[Converter] = []
    missing: dict[str, str] = {}
    for spec in CONVERTERS:
        try:
            converters.append(_load(spec))
        except ImportError as exc:
            missing[spec] = f"cannot import: {exc}"
    return Registry(converters, missing)


_registry: Registry | None = None


def registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _registry
    if _registry is None:
        _registry = build()
    return _registry

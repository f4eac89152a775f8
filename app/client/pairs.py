"""What the server converts (its `formats` query): the filetype a file converts under, and
the listing `convertd formats` prints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# 'hash' reads almost anything (to a checksum): only chosen when nothing else fits
FALLBACK = "hash"
# the server's reading of a file name (app/storage.py extension_of, normalize_format)
_COMPOUND = ("tar.gz", "tar.bz2", "tar.xz", "tar.zst")
_ALIASES = {"jpeg": "jpg", "tif": "tiff", "htm": "html", "yml": "yaml"}


def input_format(path: Path) -> str:
    name = path.name.lower()
    ext = next((c for c in _COMPOUND if name.endswith("." + c)), None)
    if ext is None:
        ext = name.rsplit(".", 1)[1] if "." in name.strip(".") else ""
    return _ALIASES.get(ext, ext)


def outputs_of(formats: list[dict[str, Any]], filetype: str, source: str) -> list[str]:
    for group in formats:
        if group["filetype"] == filetype:
            for conv in group["conversions"]:
                if conv["inputFormat"] == source:
                    return list(conv["outputFormats"])
    return []


def filetypes_for(formats: list[dict[str, Any]], source: str, target: str) -> list[str]:
    """The filetypes converting `source` to `target`, the likeliest first: the one named
    like the input (pdf for a .pdf), then in the server's order, 'hash' last."""
    found = [g["filetype"] for g in formats if target in outputs_of(formats, g["filetype"], source)]
    return sorted(found, key=lambda ft: (ft != source, ft == FALLBACK))


def all_outputs(formats: list[dict[str, Any]]) -> set[str]:
    return {fmt for group in formats for fmt in group["outputFormats"]}


def schema_of(formats: list[dict[str, Any]], filetype: str, source: str, target: str) -> dict[str, Any]:
    for group in formats:
        if group["filetype"] != filetype:
            continue
        for conv in group["conversions"]:
            if conv["inputFormat"] == source:
                for opt in conv["options"]:
                    if opt["outputFormat"] == target:
                        return opt["schema"] or {}
    return {}


def describe_option(name: str, spec: dict[str, Any]) -> str:
    """`quality (integer 1..100, default 85)` for one property of an options schema."""
    if "enum" in spec:
        kind = "|".join(_shown(v) for v in spec["enum"])
    else:
        kind = str(spec.get("type", "any"))
        low, high = spec.get("minimum"), spec.get("maximum")
        if low is not None or high is not None:
            kind += f" {'' if low is None else low}..{'' if high is None else high}"
    if "default" in spec:
        kind += f", default {_shown(spec['default'])}"
    return f"{name} ({kind})"


def _shown(value: Any) -> str:
    """As it is typed on the command line: text bare, anything else as JSON (true, 1.5)."""
    return value if isinstance(value, str) else json.dumps(value)


def listing(formats: list[dict[str, Any]], filetype: str | None = None) -> Iterator[str]:
    """Per filetype, each input format with its outputs; outputs that take the same options
    share one line, so the list stays readable."""
    for group in formats:
        if filetype and group["filetype"] != filetype:
            continue
        yield f"{group['filetype']}:"
        for conv in group["conversions"]:
            by_options: dict[str, list[str]] = {}
            for opt in conv["options"]:
                props = (opt["schema"] or {}).get("properties") or {}
                text = ", ".join(describe_option(n, s) for n, s in props.items()) or "no options"
                by_options.setdefault(text, []).append(opt["outputFormat"])
            listed = {fmt for fmts in by_options.values() for fmt in fmts}
            rest = [fmt for fmt in conv["outputFormats"] if fmt not in listed]
            if rest:
                by_options.setdefault("no options", []).extend(rest)
            for text, targets in by_options.items():
                yield f"  {conv['inputFormat']} -> {', '.join(targets)}"
                yield f"      options: {text}"

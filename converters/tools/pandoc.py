"""Run pandoc (the binary pypandoc-binary ships) on one file, always with --sandbox.

--sandbox keeps pandoc from reading any file or URL other than its input and its own data
files: an image, include or stylesheet that a hostile document points at is reported as
missing and left out. The run also goes through `process.run_isolated` (no network, no view
of the host's files) where the machine allows it.
"""

from __future__ import annotations

import functools
import html
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from converters.base import ConversionError
from converters.tools import process
from converters.tools.office import soffice as office

# our format name -> pandoc reader
READERS: dict[str, str] = {
    "md": "markdown",
    "html": "html",
    "rst": "rst",
    "org": "org",
    "tex": "latex",
    "txt": "html",  # plain text is wrapped into HTML paragraphs first (see text_to_html)
    "docx": "docx",
    "odt": "odt",
    "rtf": "rtf",
    "epub": "epub",
    "fb2": "fb2",
}

# our format name -> pandoc writer
WRITERS: dict[str, str] = {
    "md": "gfm",
    "html": "html5",
    "rst": "rst",
    "org": "org",
    "tex": "latex",
    "txt": "plain",
    "docx": "docx",
    "odt": "odt",
    "rtf": "rtf",
    "epub": "epub3",
    "fb2": "fb2",
}

MARKDOWN_FLAVORS: tuple[str, ...] = ("gfm", "commonmark", "markdown", "markdown_strict")

# writers that produce a fragment unless asked for a whole document
_STANDALONE = {"html", "tex", "rtf", "rst", "org"}

TIMEOUT_SECONDS = 180
MEMORY_MB = 1536  # pandoc's own heap cap (+RTS -M), below the sandbox's address-space limit

# pandoc's time grows as a power of how deep markup nests (measured with pandoc 3.9: 2,000
# nested markdown quotes 0.9 s, 400 nested lists 3.3 s, 20,000 nested HTML elements over a
# minute and 8 GB, 1,000 rst indents over 100 s): a 50 kB file would hold a worker for the
# whole timeout. Real documents nest a few levels.
MAX_NESTING = 256  # quotes (markdown) or elements (html) inside each other
MAX_INDENT = 256  # leading columns of a markdown or rst line (lists and quotes nest by indent)
_OPTIONAL_END = frozenset({"p", "li", "dt", "dd", "tr", "td", "th", "thead", "tbody", "tfoot",
                           "colgroup", "option", "optgroup", "rb", "rt", "rp"})  # fmt: skip
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "param", "source", "track", "wbr"})  # fmt: skip


@functools.cache
def pandoc_path() -> str | None:
    try:
        import pypandoc

        path = pypandoc.get_pandoc_path()
    except (ImportError, OSError):
        return None
    return str(path) if path and Path(path).is_file() else None


def unavailable() -> str | None:
    if pandoc_path() is None:
        return "pandoc is not installed (pip package pypandoc-binary)"
    return process.isolation_missing_but_required()


def text_to_html(src: Path, dest: Path) -> Path:
    """Plain text as HTML paragraphs, so no markup in it is interpreted."""
    raw = src.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = raw.decode("utf-16", errors="replace")
    else:
        text = raw.decode("utf-8-sig", errors="replace")
    paragraphs = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").replace("\r", "\n"))
    body = "\n".join(
        "<p>" + "<br/>".join(html.escape(line) for line in para.strip("\n").split("\n")) + "</p>"
        for para in paragraphs
        if para.strip()
    )
    dest.write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'/></head><body>\n{body}\n</body></html>",
        encoding="utf-8",
    )
    return dest


def convert(
    src: Path,
    input_format: str,
    output_format: str,
    workdir: Path,
    *,
    markdown_flavor: str | None = None,
    toc: bool = False,
    metadata: Mapping[str, str] | None = None,
    timeout: float = TIMEOUT_SECONDS,
) -> Path:
    """Convert src with pandoc --sandbox; return the output file inside workdir."""
    pandoc = pandoc_path()
    if pandoc is None:
        raise ConversionError("pandoc is not installed on this server.", unavailable())
    check_nesting(src, input_format)
    run_dir = office.fresh_dir(workdir / "pandoc-run")
    # pandoc names an untitled book after its input file: keep the uploaded name's stem
    stem = re.sub(r"[^\w .-]+", "_", src.stem).strip(" .") or "document"
    if input_format == "txt":
        staged = text_to_html(src, run_dir / f"{stem}.html")
    else:
        staged = run_dir / f"{stem}.{input_format}"
        office.stage(src, staged)
    (run_dir / "out").mkdir()
    out = run_dir / "out" / f"{stem}.{output_format}"
    args = _arguments(input_format, output_format, out, stem, markdown_flavor, toc, metadata)
    cmd = [pandoc, *args, str(staged)]
    proc = process.run_isolated(
        cmd,
        share=run_dir,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(run_dir)},
        timeout=timeout,
        what="pandoc",
        read_only=[Path(pandoc).resolve()],
    )
    if proc.returncode != 0 or not out.is_file():
        detail = _first_error(proc.stderr)
        raise ConversionError(
            f"pandoc could not convert this {input_format} file to {output_format}.",
            hint=(
                f"The file may be damaged or not really {input_format}."
                + (f" pandoc said: {detail}" if detail else "")
            ),
        )
    final = run_dir.with_name(f"{run_dir.name}.{output_format}")
    out.replace(final)
    shutil.rmtree(run_dir, ignore_errors=True)
    return final


def check_nesting(src: Path, input_format: str) -> None:
    """Refuse markup nested deeper than pandoc converts in reasonable time (MAX_NESTING)."""
    if input_format not in ("md", "rst", "html"):
        return
    text = src.read_text(encoding="utf-8", errors="replace")
    if input_format == "html":
        measured = [(_html_depth(text), "elements", MAX_NESTING)]
    else:
        indent, quotes = _line_depth(text)
        measured = [(quotes, "quotes", MAX_NESTING), (indent, "columns of indent", MAX_INDENT)]
    for depth, what, limit in measured:
        if depth > limit:
            raise ConversionError(
                f"The {input_format} file nests {depth:,} {what} deep, over the limit of {limit}.",
                "Flatten its structure (quotes in quotes, lists in lists, elements in elements); "
                "documents rarely need more than a few levels.",
            )


def _line_depth(text: str) -> tuple[int, int]:
    """The deepest indent (columns, a tab counting 4) and markdown quote nesting of any line."""
    indent = quotes = 0
    for match in re.finditer(r"^[ \t>]+", text, re.MULTILINE):
        prefix = match.group()
        quotes = max(quotes, prefix.count(">"))
        lead = len(prefix) - len(prefix.lstrip(" \t"))
        indent = max(indent, len(prefix[:lead].expandtabs(4)))
    return indent, quotes


def _html_depth(text: str) -> int:
    """How deep elements nest, counting only those whose end tag is required (a <p> or <li>
    left open is closed by the next one) and none in comments, scripts or styles."""
    text = re.sub(r"<!--.*?-->|<(script|style)\b.*?</\1\s*>", "", text, flags=re.DOTALL | re.IGNORECASE)
    depth = deepest = 0
    for match in re.finditer(r"<(/?)([A-Za-z][A-Za-z0-9-]*)[^>]*?(/?)>", text):
        closing, name, self_closed = match.group(1), match.group(2).lower(), match.group(3)
        if name in _VOID or name in _OPTIONAL_END or self_closed:
            continue
        depth = max(depth - 1, 0) if closing else depth + 1
        deepest = max(deepest, depth)
    return deepest


def _arguments(
    input_format: str,
    output_format: str,
    out: Path,
    stem: str,
    markdown_flavor: str | None,
    toc: bool,
    metadata: Mapping[str, str] | None,
) -> list[str]:
    """pandoc's arguments for one run (without the input): heap cap, sandbox, reader, writer."""
    reader = READERS[input_format]
    writer = WRITERS[output_format]
    if markdown_flavor:
        if input_format == "md":
            reader = markdown_flavor
        if output_format == "md":
            writer = markdown_flavor
    args = [
        "+RTS",
        f"-M{MEMORY_MB}m",
        "-RTS",
        "--sandbox",
        f"--from={reader}",
        f"--to={writer}",
        f"--output={out}",
    ]
    if output_format in _STANDALONE:
        args.append("--standalone")
    metadata = dict(metadata or {})
    if output_format == "html":
        # one self-contained file: images the input itself carries become data: URLs
        args.append("--embed-resources")
        args.append(f"--metadata=pagetitle:{metadata.get('title') or stem}")
    args += [f"--metadata={key}:{value}" for key, value in metadata.items()]
    if toc:
        args.append("--toc")
    return args


def _first_error(stderr: str) -> str:
    for line in stderr.splitlines():
        line = line.strip()
        if line and not line.startswith("[WARNING]"):
            return line[:300]
    return ""

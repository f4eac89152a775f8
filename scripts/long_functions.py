"""List the functions over a length in app/ and converters/ (issue 11: about 60 lines at most).

A function longer than that is either split or says in its docstring why it is long
("Long on purpose: ..."); this lists each with the first line of its docstring and exits 1
when one of them has no docstring, or a docstring that never says "long" (then it is not
saying why). scripts/check.sh runs it.

    .venv/bin/python scripts/long_functions.py            # app/ and converters/, over 60 lines
    .venv/bin/python scripts/long_functions.py --limit 40 app/services
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def long_functions(paths: list[Path], limit: int) -> list[tuple[int, str, str, str]]:
    """(lines, where, name, docstring) of every function longer than `limit` lines, longest first."""
    found = []
    for top in paths:
        for path in sorted(top.rglob("*.py")) if top.is_dir() else [top]:
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno:
                    lines = node.end_lineno - node.lineno + 1
                    if lines > limit:
                        where = (
                            f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{node.lineno}"
                        )
                        found.append((lines, where, node.name, ast.get_docstring(node) or ""))
    return sorted(found, reverse=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[ROOT / "app", ROOT / "converters"])
    parser.add_argument("--limit", type=int, default=60)
    args = parser.parse_args()
    found = long_functions([p.resolve() for p in args.paths], args.limit)
    for lines, where, name, doc in found:
        print(f"{lines:5d}  {where}  {name}: {doc.splitlines()[0] if doc else 'NO DOCSTRING'}")
    unexplained = [f"{where} {name}" for _, where, name, doc in found if "long" not in doc.lower()]
    for what in unexplained:
        print(
            f"error: {what} is over {args.limit} lines and its docstring does not say why it is long",
            file=sys.stderr,
        )
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())

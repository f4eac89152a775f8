"""scripts/long_functions.py: the gate that a function over 60 lines says why it is long.

The script is run as scripts/check.sh runs it, on files written here, and on the tree.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "long_functions.py"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=60
    )


def function(name: str, docstring: str, lines: int) -> str:
    body = "".join(f"    x{i} = {i}\n" for i in range(lines))
    return f'def {name}() -> int:\n    """{docstring}"""\n{body}    return 0\n\n\n'


def test_a_long_function_must_say_why_it_is_long(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        function("short", "Short.", 10)
        + function("explained", "A table.\n\n    Long on purpose: one literal per route.", 70)
        + function("silent", "Does many things.", 70)
        + "def bare() -> None:\n"
        + "".join(f"    y{i} = {i}\n" for i in range(70))
    )
    result = run(module)
    assert result.returncode == 1
    listed = result.stdout.splitlines()
    assert any(line.endswith("explained: A table.") for line in listed)
    assert not any("short" in line for line in listed)
    assert "silent is over 60 lines" in result.stderr
    assert "bare is over 60 lines" in result.stderr
    assert "explained" not in result.stderr


def test_the_tree_passes_the_gate() -> None:
    result = run()
    assert result.returncode == 0, result.stderr

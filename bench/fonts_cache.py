"""What showing fontconfig's cache to the jails saves, isolated as in production
(`process.run_isolated`), with /var/cache/fontconfig bound read-only and without it
(fontconfig then scans every font file and writes its own cache in the job's folder):
`fc-list` in the jail (fontconfig's start-up, which every LibreOffice start pays) and a
cold LibreOffice conversion of a small multi-script DOCX. Runs alternate, so load drift
hits both alike; prints the median of each and their ratio.

    .venv/bin/python -m bench.fonts_cache [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from converters.tools import fonts, process
from converters.tools.office import soffice as office

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "converters"))
from samples_fonts import SCRIPT_LINES, docx


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with_cache = fonts.read_only_paths
    timings: dict[str, list[float]] = {"with cache": [], "without cache": []}
    with tempfile.TemporaryDirectory() as tmp:
        starts: dict[str, list[float]] = {"with cache": [], "without cache": []}
        for n in range(args.runs * 3):
            for name, paths in (("with cache", with_cache()), ("without cache", [])):
                folder = Path(tmp) / f"fc-{name}-{n}".replace(" ", "-")
                folder.mkdir()
                started = time.perf_counter()
                env = {"PATH": "/usr/bin:/bin", "HOME": str(folder)}
                process.run_isolated(
                    ["fc-list"], share=folder, env=env, timeout=60, what="fc-list", read_only=paths
                )
                starts[name].append(time.perf_counter() - started)
        report("fc-list in the jail", starts)
        src = docx(Path(tmp) / "scripts.docx", list(SCRIPT_LINES.values()))
        for n in range(args.runs):
            for name, paths in (("with cache", with_cache), ("without cache", lambda: [])):
                fonts.read_only_paths = paths  # what office.convert binds into the jail
                started = time.perf_counter()
                office.convert(src, "docx", "pdf", Path(tmp) / f"{name}-{n}".replace(" ", "-"))
                timings[name].append(time.perf_counter() - started)
    fonts.read_only_paths = with_cache
    report("docx -> pdf, cold LibreOffice", timings)


def report(what: str, timings: dict[str, list[float]]) -> None:
    print(what)
    for name, values in timings.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:14s} median {statistics.median(values):.3f} s  (runs: {runs})")
    ratio = statistics.median(timings["without cache"]) / statistics.median(timings["with cache"])
    print(f"  without / with: {ratio:.2f}x")


if __name__ == "__main__":
    main()

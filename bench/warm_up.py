"""What the fork server's warm-up saves each job's process (`converters.sandbox.preload.warm_up`).

    .venv/bin/python -m bench.warm_up [--jobs 40] [--pairs 4]

Each run is a process of its own that preloads the image family as the fork server does,
with or without the warm-up, then forks `--jobs` children one after another; each child
converts the same 0.3 MP JPEG to WebP (the sniff, the converter's check and convert: what a
job's process runs, without the isolation layers) and exits. The children's CPU (user +
system) and minor page faults per job are read from the parent's RUSAGE_CHILDREN. Cold and
warm runs alternate, so a change in the machine's load falls on both.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def _child_run(warm: bool, jobs: int) -> dict[str, float]:
    from converters.sandbox import preload

    if not warm:
        preload.warm_up = lambda: None  # type: ignore[assignment]  # the cold server
    preload.preload("image")
    from bench.service import photo
    from converters.base import Task
    from converters.filetypes.image.converter import ImageConverter
    from converters.sniff import check_declared

    with tempfile.TemporaryDirectory(prefix="warmbench") as tmp:
        source = Path(tmp) / "p.jpg"
        source.write_bytes(photo(640, 480))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        for i in range(jobs):
            workdir = Path(tmp) / f"job{i}"
            workdir.mkdir()
            pid = os.fork()
            if pid == 0:
                check_declared(source, "jpg")
                converter = ImageConverter()
                task = Task([source], "jpg", "webp", {"quality": 80}, workdir)
                converter.check(task)
                converter.convert(task)
                os._exit(0)
            os.waitpid(pid, 0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"cpu_ms": 1000 * cpu / jobs, "faults": (after.ru_minflt - before.ru_minflt) / jobs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--child", choices=("cold", "warm"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child_run(args.child == "warm", args.jobs)))
        return
    print(f"CPU ms and page faults per job's process, {args.jobs} forked children a run")
    print(f"{'pair':>4} {'cold ms':>8} {'warm ms':>8} {'saved':>6} {'cold flt':>9} {'warm flt':>9}")
    saved = []
    for pair in range(1, args.pairs + 1):
        got = {}
        for kind in ("cold", "warm"):
            out = subprocess.run(
                [sys.executable, "-m", "bench.warm_up", "--child", kind, "--jobs", str(args.jobs)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            got[kind] = json.loads(out.stdout.strip().splitlines()[-1])
        saved.append(got["cold"]["cpu_ms"] - got["warm"]["cpu_ms"])
        print(f"{pair:4d} {got['cold']['cpu_ms']:8.1f} {got['warm']['cpu_ms']:8.1f} {saved[-1]:6.1f}"
              f" {got['cold']['faults']:9.0f} {got['warm']['faults']:9.0f}")  # fmt: skip
    print(f"mean saved: {sum(saved) / len(saved):.1f} ms a job; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""What the sandbox costs per job: the raw converter call vs `converters.sandbox.parent.run()`.

    env -u PYTHONDONTWRITEBYTECODE .venv/bin/python bench/sandbox_latency.py [--jobs 30]

For each case the same converter runs on the same input, alternately in this process
(`check` + `convert`, what the engine costs) and through the sandbox (a job process forked
from the fork server, every isolation layer, progress pipe, exit status), one job at a
time, after one untimed warm-up of each. It prints both medians side by side, their ratio
and the difference (the sandbox's cost per job).

To compare with another version of the sandbox, run the same script with that version's
`converters` first on the path (PYTHONPATH=/path/to/checkout).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

import converters
from converters.base import Task
from converters.registry import registry
from converters.sandbox import parent as sandbox


def _raw(filetype: str, src: str, dst: str, options: dict[str, Any], path: Path, workdir: Path) -> None:
    reg = registry()
    conv = reg.find(filetype, src, dst)
    options = reg.validate(filetype, src, dst, options)
    (workdir / "in").mkdir(parents=True)
    staged = workdir / "in" / path.name
    shutil.copyfile(path, staged)
    task = Task(inputs=[staged], input_format=src, output_format=dst, options=options, workdir=workdir)
    conv.check(task)
    conv.convert(task)


def _inputs(root: Path) -> dict[str, tuple[str, str, str, dict[str, Any], Path]]:
    data = root / "data.bin"
    data.write_bytes(os.urandom(100_000))
    png = root / "photo.png"
    buf = io.BytesIO()
    Image.effect_mandelbrot((640, 480), (-2, -1.2, 1, 1.2), 50).convert("RGB").save(buf, "PNG")
    png.write_bytes(buf.getvalue())
    jpg = root / "photo.jpg"
    Image.effect_mandelbrot((640, 480), (-2, -1.2, 1, 1.2), 80).convert("RGB").save(jpg, "JPEG", quality=90)
    return {
        "hash 100 kB sha256": ("hash", "bin", "json", {"algorithms": ["sha256"]}, data),
        "png 640x480 -> webp": ("image", "png", "webp", {}, png),
        "jpg 0.3 MP -> webp": ("image", "jpg", "webp", {}, jpg),
    }


def _phases(into: dict[str, list[float]]) -> None:
    t = getattr(sandbox, "last_timings", None)
    if not t:
        return
    steps = (("to start", "submitted", "started"), ("isolate", "started", "isolated"),
             ("convert", "isolated", "converted"), ("report", "converted", "returned"),
             ("(spare: prepare)", "forked", "prepared"))  # fmt: skip
    for label, start, end in steps:
        if start in t and end in t:
            into.setdefault(label, []).append((t[end] - t[start]) * 1000)


async def main(args: argparse.Namespace) -> None:
    print(f"converters from {converters.__path__[0]}")
    with tempfile.TemporaryDirectory(prefix="cdlat") as tmp:
        root = Path(tmp)
        cases = _inputs(root)
        started = time.perf_counter()
        await sandbox.run("hash", "bin", "json", {}, [root / "data.bin"], root / "first")
        print(f"first job (starts the sandbox): {(time.perf_counter() - started) * 1000:.0f} ms")
        layers = getattr(sandbox, "layers", None)
        if layers is not None:
            print("layers: " + ", ".join(f"{k}={'on' if v else 'OFF'}" for k, v in layers.items()))
        print(f"{'case':<22} {'raw ms':>8} {'sandbox ms':>11} {'ratio':>7} {'+ms/job':>8}   "
              "median phases of a sandboxed job, ms")  # fmt: skip
        for n, (name, (filetype, src, dst, options, path)) in enumerate(cases.items()):
            phases: dict[str, list[float]] = {}
            raw: list[float] = []
            boxed: list[float] = []
            for i in range(args.jobs + 1):
                t0 = time.perf_counter()
                _raw(filetype, src, dst, options, path, root / f"{n}-raw-{i}")
                t1 = time.perf_counter()
                await sandbox.run(filetype, src, dst, options, [path], root / f"{n}-box-{i}")
                t2 = time.perf_counter()
                if i:  # the first of each is a warm-up
                    raw.append((t1 - t0) * 1000)
                    boxed.append((t2 - t1) * 1000)
                    _phases(phases)
            r, b = statistics.median(raw), statistics.median(boxed)
            print(f"{name:<22} {r:>8.1f} {b:>11.1f} {b / r:>7.2f} {b - r:>8.1f}   " + ", ".join(
                f"{k} {statistics.median(v):.1f}" for k, v in phases.items()))  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=30)
    asyncio.run(main(parser.parse_args()))

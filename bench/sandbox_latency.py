"""Mean wall time of `converters.sandbox.run()` alone, jobs run one after another.

    .venv/bin/python bench/sandbox_latency.py [--jobs 20]

Runs a sha256 hash job (100 kB) and a 640x480 png->webp job; one untimed warm-up each.
CONVERTD_SANDBOX_WARM=0 measures the cold path (a fresh interpreter per job).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from converters import sandbox


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="cdlat") as tmp:
        root = Path(tmp)
        data = root / "data.bin"
        data.write_bytes(b"x" * 100_000)
        buf = io.BytesIO()
        Image.effect_mandelbrot((640, 480), (-2, -1.2, 1, 1.2), 50).convert("RGB").save(buf, "PNG")
        png = root / "photo.png"
        png.write_bytes(buf.getvalue())
        jobs = {
            "hash": ("hash", "bin", "json", {"algorithms": ["sha256"]}, data),
            "image": ("image", "png", "webp", {}, png),
        }
        print(f"CONVERTD_SANDBOX_WARM={os.environ.get('CONVERTD_SANDBOX_WARM', '(unset)')}")
        for name, (filetype, src, dst, options, path) in jobs.items():
            times = []
            for i in range(args.jobs + 1):
                workdir = root / f"{name}-{i}"
                started = time.perf_counter()
                await sandbox.run(filetype, src, dst, options, [path], workdir)
                if i:  # the first one is a warm-up
                    times.append(time.perf_counter() - started)
                if args.pause:
                    await asyncio.sleep(args.pause)
            print(
                f"{name}: mean={statistics.mean(times) * 1000:.0f} ms "
                f"median={statistics.median(times) * 1000:.0f} ms "
                f"min={min(times) * 1000:.0f} ms max={max(times) * 1000:.0f} ms (n={len(times)})"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between jobs")
    asyncio.run(main(parser.parse_args()))

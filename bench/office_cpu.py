"""CPU per one-page DOCX -> PDF job, summed over every process that takes part, by kind.

On a shared 2-core machine wall times drift with the other work; the CPU a job costs does
much less, and it is what bounds throughput once both cores are busy. One run, sequential
jobs, each path in turn: unoserver driven directly, the worker's pool alone (through a
job's door), the converter path (door + sandbox child), the whole job (REST, events,
download) and the whole job in one call with `wait`. CPU is read from /proc (utime +
stime of each live process, plus what its reaped children used), grouped by what the
process is: unoserver, LibreOffice jails, the sandbox's fork server and its job children,
PostgreSQL, Redis, and this process (API, worker, clients).

    env -u PYTHONDONTWRITEBYTECODE .venv/bin/python bench/office_cpu.py [--jobs 30]

(unoserver set up as bench/office.py's docstring says.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pypandoc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import office as bench  # bench/office.py (its Service, Unoserver, pool_direct)

from converters.sandbox import parent as sandbox
from converters.tools.office import broker as office_broker
from converters.tools.office import pool as office_pool

TICK = os.sysconf("SC_CLK_TCK")


def processes() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent, command line, CPU seconds of it and its reaped children)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        cpu = sum(int(f) for f in fields[11:15]) / TICK
        out[int(entry)] = (int(fields[1]), cmd, cpu)
    return out


def kind(pid: int, procs: dict[int, tuple[int, str, float]], root: Path) -> str | None:
    chain, p = [], pid
    while p in procs and p > 1:
        if str(root) in procs[p][1] and "postgres" in procs[p][1]:
            return "postgres"  # the embedded server daemonises: found by its data directory
        if p == os.getpid():
            break
        chain.append(p)
        p = procs[p][0]
    if p != os.getpid():
        return None
    top = procs[chain[-1]][1] if chain else ""
    for needle, name in (("unoserver", "unoserver"), ("redis", "redis"),
                         ("converters.sandbox.forkserver", "sandbox"),
                         ("unshare", "LibreOffice jails")):  # fmt: skip
        if needle in top:
            return name
    return "other"


def cpu_by_kind(root: Path) -> dict[str, float]:
    procs = processes()
    total: dict[str, float] = {}
    for pid, (_parent, _cmd, cpu) in procs.items():
        name = "this process" if pid == os.getpid() else kind(pid, procs, root)
        if name is not None:
            total[name] = total.get(name, 0.0) + cpu
    return total


async def main(args: argparse.Namespace) -> None:
    os.environ.setdefault("CONVERTD_OFFICE_INSTANCES", "2")
    with tempfile.TemporaryDirectory(prefix="cdofficecpu") as tmp:
        root = Path(tmp)
        src = root / "one-page.docx"
        one = "# Quarterly note\n\n" + "A one-page letter with a heading and a few paragraphs of text. " * 12
        pypandoc.convert_text(one, "docx", format="md", outputfile=str(src))
        uno = bench.Unoserver(root)
        try:
            async with bench.Service(root) as svc:
                pool = office_pool.current()
                assert pool is not None

                async def unoserver() -> None:
                    with bench.scratch(root) as out:
                        await asyncio.to_thread(uno.convert, src, out / "out.pdf")

                async def pool_alone() -> None:
                    with bench.scratch(root) as work:
                        await asyncio.to_thread(bench.pool_direct, pool, src, work, svc.account)

                async def converter() -> None:
                    with bench.scratch(root) as work:
                        async with office_broker.serve_job(work, svc.account, pool=pool):
                            await sandbox.run("document", "docx", "pdf", {}, [src], work)

                paths: dict[str, Callable[[], Awaitable[object]]] = {
                    "unoserver": unoserver,
                    "pool alone": pool_alone,
                    "converter": converter,
                    "whole job": lambda: svc.job(src),
                    "with wait": lambda: svc.job(src, wait=True),
                }
                print(f"CPU per one-page DOCX -> PDF job, ms, {args.jobs} sequential jobs a path")
                for name, one_job in paths.items():
                    for _ in range(3):  # untimed: lazy imports, caches
                        await one_job()
                    before, start = cpu_by_kind(root), time.perf_counter()
                    for _ in range(args.jobs):
                        await one_job()
                    wall = (time.perf_counter() - start) / args.jobs * 1000
                    after = cpu_by_kind(root)
                    per = {k: (after[k] - before.get(k, 0.0)) / args.jobs * 1000 for k in after}
                    parts = ", ".join(f"{k} {v:.0f}" for k, v in sorted(per.items()) if v >= 0.5)
                    print(f"{name:<10} {sum(per.values()):5.0f} (wall {wall:4.0f}): {parts}")
        finally:
            uno.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=30)
    asyncio.run(main(parser.parse_args()))

"""What one isolated process per job costs at least, layer by layer, before any conversion.

    .venv/bin/python -m bench.isolation_floor [--jobs 200] [--family image]

Preloads a family as its fork server does (`converters.sandbox.preload`), then forks
`--jobs` children for each step and reads their CPU (user + system, this process and its
children) per job: a bare fork and exit; plus the namespaces a job's process unshares;
plus a pid namespace whose pid 1 is a `cat` (as root); `isolation.prepare` (namespaces and
the read-only tree); prepare and `isolation.finish` (pivot, limits, uid, no_new_privs,
seccomp). Steps alternate within one run, so the machine's load falls on all of them.
The pid-namespace steps need root; other steps run as any user who may unshare.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from converters.sandbox import isolation, kernel, seccomp
from converters.sandbox.preload import preload

LIMITS = {"memory_bytes": 1 << 31, "cpu_seconds": 10, "output_bytes": 1 << 20}


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def per_job(child: Callable[[], object], jobs: int, *, pid_ns: bool = False) -> float:
    """Milliseconds of CPU a job's process costs with `child` run in it, its pid 1 included."""
    own_ns = os.open("/proc/self/ns/pid", os.O_RDONLY) if pid_ns else -1
    before = _cpu()
    for _ in range(jobs):
        init = None
        if pid_ns:
            kernel.unshare(kernel.CLONE_NEWPID)
            init = subprocess.Popen(["cat"], stdin=subprocess.PIPE)
        pid = os.fork()
        if pid == 0:
            try:
                child()
            finally:
                os._exit(0)
        if pid_ns:
            kernel.setns(own_ns, kernel.CLONE_NEWPID)
        os.waitpid(pid, 0)
        if init is not None:
            init.kill()
            init.wait()
    if pid_ns:
        os.close(own_ns)
    return (_cpu() - before) * 1000 / jobs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--family", default="image")
    args = parser.parse_args()
    preload(args.family)
    seccomp.compiled()  # as the fork server does: built once, loaded per job
    gc.collect()
    gc.freeze()
    with tempfile.TemporaryDirectory(prefix="convertd-floor-") as tmp:
        _run(args, Path(tmp))


def _run(args: argparse.Namespace, tmp: Path) -> None:
    mount_point = str(tmp / "root")
    workdir = tmp / "job"  # one for every child: each only enters it, none writes to it
    for path in (tmp / "root", workdir / "tmp", workdir / "in"):
        path.mkdir(parents=True)
    namespaces = kernel.CLONE_NEWNS | kernel.CLONE_NEWNET | kernel.CLONE_NEWIPC | kernel.CLONE_NEWUTS

    def prepare_and_finish() -> None:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # (finish names the pid layer it lacks here)
        prep = isolation.prepare(mount_point, in_pid_ns=False)
        isolation.finish(prep, workdir, LIMITS, strict=False)

    steps: list[tuple[str, Callable[[], object], bool]] = [
        ("fork, exit", lambda: None, False),
        ("fork, unshare mount/net/ipc/uts, exit", lambda: kernel.unshare(namespaces), False),
        ("fork, isolation.prepare, exit", lambda: isolation.prepare(mount_point, in_pid_ns=False), False),
        ("fork, prepare + finish, exit", prepare_and_finish, False),
    ]
    if os.geteuid() == 0:
        steps.insert(1, ("fork into a pid namespace (cat as pid 1)", lambda: None, True))
    print(f"CPU ms per job's process ({args.family} family preloaded, {args.jobs} jobs a step)")
    started = time.monotonic()
    figures: dict[str, list[float]] = {name: [] for name, _, _ in steps}
    for _ in range(3):  # in turns: the machine's load falls on every step
        for name, child, pid_ns in steps:
            figures[name].append(per_job(child, args.jobs // 3 or 1, pid_ns=pid_ns))
    for name, values in figures.items():
        print(f"  {name:40} {sorted(values)[1]:6.2f}")
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()

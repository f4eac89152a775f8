"""The child side of `converters.sandbox`: `python -P -m converters.child <fd> [--warm [conv]]`.

Reads the job spec (JSON) from stdin, enters the job (cwd, HOME and TMPDIR in its
directory), locks itself down (resource limits, no network), checks the declared input type
against the content, then runs the converter's `check` and `convert`. Progress and the
outcome go to file descriptor <fd> as JSON lines, because converter libraries may write
anything to stdout and stderr.

With `--warm` the child is started before any job exists: it imports what the next job
likely needs (the previous job's converter module and libmagic's database) and then waits
on stdin. Nothing it does before the spec arrives depends on a job or touches any input,
and it still runs exactly one job and exits.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import importlib
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import IO, Any

from converters.base import ConversionError, Task

_CLONE_NEWNET, _CLONE_NEWUSER = 0x40000000, 0x10000000
_PR_SET_PDEATHSIG = 1
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


def _limit(which: int, soft: int, hard: int | None = None) -> None:
    hard = soft if hard is None else hard
    try:
        resource.setrlimit(which, (soft, hard))
    except (ValueError, OSError):
        # Never raise a limit above what we were given: keep the tighter inherited one.
        _soft, cur_hard = resource.getrlimit(which)
        if cur_hard != resource.RLIM_INFINITY:
            resource.setrlimit(which, (min(soft, cur_hard), cur_hard))


def apply_limits(limits: dict[str, int]) -> None:
    _limit(resource.RLIMIT_AS, int(limits["memory_bytes"]))
    cpu = int(limits["cpu_seconds"])
    # the soft limit sends SIGXCPU (reported as "CPU time"), the hard one SIGKILLs
    _limit(resource.RLIMIT_CPU, cpu, cpu + 5)
    _limit(resource.RLIMIT_FSIZE, int(limits["output_bytes"]))
    _limit(resource.RLIMIT_CORE, 0)


def isolate_network() -> bool:
    """Move into a fresh network namespace (only a loopback): True when that worked.

    As root that is one unshare(CLONE_NEWNET). Without root, a new user namespace grants
    the right to make one, where unprivileged user namespaces are allowed; our uid and gid
    are mapped to themselves, so files keep their owner. If neither works we go on without
    isolation and the service reports it (`sandbox.network_isolated`). (os.unshare needs
    Python 3.12.)
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) != 0:
        uid, gid = os.getuid(), os.getgid()
        if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
            return False
        try:
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                               ("gid_map", f"{gid} {gid} 1")):  # fmt: skip
                with open(f"/proc/self/{name}", "w") as fh:
                    fh.write(text)
        except OSError:
            pass  # unmapped we run as the overflow user, still without network
    # Bring the namespace's own loopback up, so tools that talk to themselves over
    # 127.0.0.1 still work; nothing outside is reachable.
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            ifreq = struct.pack("16sH22x", b"lo", 0)
            flags = struct.unpack("16sH22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, ifreq))[1]
            fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))
    except OSError:
        pass
    return True


class _Channel:
    """JSON lines to the parent; progress is throttled here so a chatty converter is cheap."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.last_value = 0.0
        self.last_time = 0.0

    def send(self, msg: dict[str, Any]) -> None:
        self.stream.write(json.dumps(msg) + "\n")
        self.stream.flush()

    def progress(self, fraction: float) -> None:
        try:
            value = min(max(float(fraction), 0.0), 1.0)
        except (TypeError, ValueError):
            return
        now = time.monotonic()
        if value <= self.last_value or (now - self.last_time < 0.05 and value < 1.0):
            return
        self.last_value, self.last_time = value, now
        self.send({"progress": value})


def _class(spec: str) -> Any:
    module, _, cls = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in cls.split("."):
        obj = getattr(obj, part)
    return obj


def _load(spec: str) -> Any:
    return _class(spec)()


def _format_of(name: str) -> str | None:
    from converters.registry import normalize_format

    lower = name.lower()
    for ext in ("tar.gz", "tar.bz2", "tar.xz"):
        if lower.endswith("." + ext):
            return ext
    return normalize_format(lower.rsplit(".", 1)[1]) if "." in lower else None


def convert(spec: dict[str, Any], channel: _Channel) -> dict[str, Any]:
    from converters.sniff import check_declared

    workdir = Path(spec["workdir"])
    inputs = [workdir / rel for rel in spec["inputs"]]
    converter = _load(spec["converter"])
    # a converter that never interprets the content (checksums) takes any bytes as declared
    if not converter.content_agnostic:
        for path in inputs:
            # several inputs may mix formats (a png and a jpg into one pdf): each by its name
            own = _format_of(path.name) if len(inputs) > 1 else None
            check_declared(path, own or spec["input_format"])
    task = Task(
        inputs=inputs,
        input_format=spec["input_format"],
        output_format=spec["output_format"],
        options=spec["options"],
        workdir=workdir,
        progress=channel.progress,
    )
    converter.check(task)
    result = converter.convert(task)
    path = Path(result.path)
    if not path.is_absolute():
        path = workdir / path
    return {"path": os.path.relpath(path, workdir), "items": list(result.items)}


def preload(converter: str | None) -> None:
    """Warm start: import what the likely next job needs, before any job exists.

    `converter` ("module:Class", from the parent's registry) is the previous job's: the
    next one is likely alike, and a guess that misses only costs CPU. Step by step, and
    only until the spec is waiting on stdin."""

    def spec_waiting() -> bool:
        return bool(select.select([sys.stdin], [], [], 0)[0])

    import converters.registry  # noqa: F401  (every job needs these)

    if not converter or spec_waiting():
        return
    cls = _class(converter)  # its module, with its libraries (Pillow, PyMuPDF...)
    if cls.content_agnostic or spec_waiting():
        return
    from converters import sniff

    sniff._magic(True)  # libmagic's database (the system's: HOME is no job's yet)
    sniff._magic(False)


def enter_job(spec: dict[str, Any]) -> None:
    """Everything about the process that depends on the job, before any input is touched.

    A cold child was started with these already; a warm one was started before the job
    existed, so here is where it gets them. Helpers inherit them through os.environ.
    """
    import tempfile

    workdir = Path(spec["workdir"])
    os.chdir(workdir)
    os.environ["HOME"] = str(workdir)
    os.environ["TMPDIR"] = str(workdir / "tmp")
    tempfile.tempdir = None  # never a directory cached before the job


def die_with_parent() -> None:
    """A worker killed with SIGKILL cannot kill us: have the kernel do it (PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the line above
        os._exit(1)


def main() -> int:
    die_with_parent()
    fd = int(sys.argv[1])
    os.set_inheritable(fd, False)  # helpers (ffmpeg, soffice) must not keep it open
    channel = _Channel(os.fdopen(fd, "w", encoding="utf-8"))
    if "--warm" in sys.argv[2:3]:
        try:
            preload(sys.argv[3] if len(sys.argv) > 3 else None)
        except Exception:  # the job imports what it needs itself and fails as a cold child would
            traceback.print_exc()
    spec = json.load(sys.stdin)
    enter_job(spec)
    apply_limits(spec["limits"])
    isolated = isolate_network()
    try:
        result = convert(spec, channel)
    except ConversionError as exc:
        channel.send(
            {
                "error": {
                    "kind": "converter",
                    "message": exc.message,
                    "hint": exc.hint,
                    "detail": traceback.format_exc(limit=-3),
                },
                "isolated": isolated,
            }
        )
        return 1
    except MemoryError:
        # drop what we can before formatting anything
        channel.send({"error": {"kind": "memory", "detail": "MemoryError"}})
        return 1
    except Exception as exc:
        kind = "internal"
        if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
            kind = "output_size"
        elif isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
            kind = "memory"
        channel.send({"error": {"kind": kind, "detail": traceback.format_exc()}})
        return 1
    channel.send({"result": result, "isolated": isolated})
    return 0


if __name__ == "__main__":
    sys.exit(main())

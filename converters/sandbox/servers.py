"""The worker's fork servers: one per family per worker process, started and replaced here.

`converters.sandbox.parent.run` asks `server(family)` for the running fork server of its
converter's family (`FAMILIES`) and hands it the job; this module starts one when none runs,
replaces one that died or served `recycle_after()` jobs, and stops them at exit. The fork
server itself is `converters.sandbox.forkserver`, a process of its own.
"""

from __future__ import annotations

import array
import asyncio
import atexit
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from converters.tools import fonts

log = logging.getLogger(__name__)

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _zygote_env() -> dict[str, str]:
    """The fork server's environment: nothing of ours (database URLs, keys, proxies).

    Each job replaces it with its own (`child.job_environment`)."""
    # The zygote must import the same code as we do (tests add their own modules to the
    # path); no job directory is ever on the path (it runs with -P).
    paths = [str(_PROJECT_ROOT)] + [p for p in sys.path if p and os.path.isdir(p)]
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "TMPDIR": tempfile.gettempdir(),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)),
        "PYTHONIOENCODING": "utf-8",
        **({"PYTHONDONTWRITEBYTECODE": "1"} if os.environ.get("PYTHONDONTWRITEBYTECODE") else {}),
        **fonts.environment(),  # the deployment's font folders, which jobs are shown
    }


SANDBOX_ENV = "CONVERTD_SANDBOX"  # "strict": refuse to convert when a layer is missing
ZYGOTE_START_SECONDS = 120


def strict() -> bool:
    return os.environ.get(SANDBOX_ENV, "").strip().lower() == "strict"


class ZygoteDied(Exception):
    """The fork server went away (it is started again for the next job)."""


# Jobs of these converter modules fork from a fork server that imports only their family's
# libraries (`converters.sandbox.preload.FAMILY_PRELOAD`); every other job from the one that imports
# everything. Forking copies the page tables of all the server holds: a tiny job's fork and
# exit cost ~4 ms of CPU from the image server, ~11 ms from the full one.
FAMILIES: dict[str, str] = {
    "converters.filetypes.image.converter": "image",
    "converters.filetypes.hash": "hash",
    "converters.filetypes.document": "document",
    "converters.filetypes.ebook": "document",
}
ALL = "all"


def family_of(converter: object) -> str:
    """The fork server family whose children run this converter."""
    return FAMILIES.get(type(converter).__module__, ALL)


class ForkServer:
    """Our handle on one fork server: its process and the control socket to it."""

    def __init__(self, family: str = ALL) -> None:
        self.env = _zygote_env()
        self.family = family
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-P", "-m", "converters.sandbox.forkserver", str(theirs.fileno()), family],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                cwd="/",
                env=self.env,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # a Ctrl-C meant for us reaches it through its socket
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.control = ours
        self.owner = os.getpid()
        self.dead = False
        self.jobs = 0
        self.send_lock = threading.Lock()
        # it answers once everything is imported and its probe job has run
        ours.settimeout(ZYGOTE_START_SECONDS)
        try:
            hello = json.loads(ours.recv(65536) or b"{}")
        except (OSError, ValueError):
            hello = {}
        ours.settimeout(None)
        if not hello.get("ready"):
            self.close()
            raise ZygoteDied("the conversion fork server did not start")
        self.layers: dict[str, bool] = {k: bool(v) for k, v in hello.get("layers", {}).items()}
        self.missing = [name for name, on in self.layers.items() if not on]
        if hello.get("threads", 1) != 1:
            log.warning("the conversion fork server runs %s threads; forking it is unsafe", hello["threads"])

    def alive(self) -> bool:
        return (
            not self.dead
            and self.owner == os.getpid()
            and self.popen.poll() is None
            and self.env == _zygote_env()
            and self.jobs < recycle_after()
        )

    def submit(self, header: dict[str, Any], fds: list[int]) -> None:
        data = json.dumps(header).encode()
        self.jobs += 1
        try:
            with self.send_lock:
                self.control.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        except OSError as exc:
            raise ZygoteDied(str(exc)) from exc

    def retire(self) -> None:
        """Let it go without waiting: it serves the jobs it runs to their end, then exits."""
        with contextlib.suppress(OSError):
            self.control.close()

    def close(self) -> None:
        """Let it go and wait for it to exit."""
        with contextlib.suppress(OSError):
            self.control.close()
        if self.owner == os.getpid():
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


_zygotes: dict[str, ForkServer] = {}  # by family
_retired: list[ForkServer] = []
_zygote_lock = threading.Lock()
RECYCLE_ENV = "CONVERTD_ZYGOTE_JOBS"
RECYCLE_DEFAULT = 1000


def recycle_after() -> int:
    """Jobs one fork server serves before another replaces it (CONVERTD_ZYGOTE_JOBS).

    Every child shares its fork server's address-space layout and hash seed: a job that
    learns them (a memory leak in a library) learns them for the next jobs too. A new fork
    server re-randomises both, at the cost of one start-up (~1-2 s of CPU, off the job path
    only for the job that triggers it)."""
    value = os.environ.get(RECYCLE_ENV, "").strip()
    return max(1, int(value)) if value.isdigit() else RECYCLE_DEFAULT


layers: dict[str, bool] | None = None
"""Which isolation layers the fork server's probe job got (None: none started yet)."""


def _get_zygote(family: str = ALL) -> ForkServer:
    """The family's running fork server, started (or started again) when needed.
    Thread-safe."""
    global layers
    with _zygote_lock:
        current = _zygotes.get(family)
        if current is not None and current.alive():
            return current
        _zygotes.pop(family, None)
        _retired[:] = [old for old in _retired if old.popen.poll() is None]  # reaps them
        if current is not None:
            if current.owner != os.getpid():
                pass  # the parent's, after a fork: not ours to stop
            elif current.popen.poll() is None and current.jobs >= recycle_after():
                current.retire()  # a fresh address-space layout for the next jobs
                _retired.append(current)
            else:
                log.warning("the conversion fork server stopped (exit %s); starting another",
                            current.popen.poll())  # fmt: skip
                current.close()
        started = ForkServer(family)
        layers = started.layers
        if started.missing:
            (log.error if strict() else log.warning)(
                "conversions run WITHOUT these sandbox layers: %s%s",
                ", ".join(started.missing),
                " (CONVERTD_SANDBOX=strict: conversions are refused)" if strict() else "",
            )
        _zygotes[family] = started
        return started


def close_zygote() -> None:
    """Stop this process's fork servers (at exit; in tests)."""
    with _zygote_lock:
        current = list(_zygotes.values())
        _zygotes.clear()
    for zygote in current:
        zygote.close()


def _forget_after_fork() -> None:
    # a forked worker starts its own zygote; the parent's stays the parent's (our copy of
    # its socket is closed so the parent's exit still ends it)
    global _zygote_lock
    _zygote_lock = threading.Lock()
    for zygote in _zygotes.values():
        with contextlib.suppress(OSError):
            zygote.control.close()
    _zygotes.clear()


atexit.register(close_zygote)
os.register_at_fork(after_in_child=_forget_after_fork)


async def prestart() -> dict[str, bool]:
    """Start the fork servers now (worker start-up) rather than with the first job."""
    loop = asyncio.get_running_loop()
    for family in sorted(set(FAMILIES.values())):
        await loop.run_in_executor(None, _get_zygote, family)
    return (await loop.run_in_executor(None, _get_zygote, ALL)).layers


async def server(family: str) -> ForkServer:
    """The family's running fork server, started (off the event loop) when none is alive.

    Raises ZygoteDied or OSError when it cannot start."""
    zygote = _zygotes.get(family)
    if zygote is None or not zygote.alive():
        zygote = await asyncio.get_running_loop().run_in_executor(None, _get_zygote, family)
    return zygote

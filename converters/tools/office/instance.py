"""One warm LibreOffice instance: its jail, its agent, and the requests it answers.

The pool (converters/tools/office/pool.py) decides which job an instance serves and when it is
replaced; this module only starts, talks to and stops one. Blocking code, run in threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from converters.tools.office import jail as office_jail
from converters.tools.office import soffice as office

if TYPE_CHECKING:
    from converters.tools.office.pool import Pool

State = Literal["starting", "ready", "busy", "stopped", "broken"]

START_TIMEOUT = 60.0
FRESH = object()  # an instance's account before its first job (any account value may be None)
OUTPUT_LIMIT = 2 * 1024**3  # bytes copied back for one output at most


class InstanceDied(Exception):
    """The instance ended (crash, OOM kill, someone killed it) while we waited on it."""


class TimedOut(Exception):
    pass


class Abandoned(Exception):
    """The job went away (its sandbox child was killed or cancelled) mid-conversion."""


class Instance:
    """One jail with its agent and soffice. Its fields are guarded by the pool's lock."""

    def __init__(self, pool: Pool, slot: int) -> None:
        self.pool = pool
        self.slot = slot
        self.dir = pool.root / f"slot-{slot}"
        self.spool = self.dir / "spool"
        self.state: State = "stopped"
        self.account: object = FRESH  # the account it serves; FRESH: nobody since it started
        self.jobs = 0
        self.generation = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.cgroups: list[Path] = []
        self.layers: dict[str, Any] = {}
        self.error = ""
        self.rss = 0  # resident bytes of the whole jail after its last conversion
        self.recycled: dict[str, int] = {}  # why it was restarted, how often (for tests, doctor)
        self._buffer = bytearray()
        self._life = threading.Lock()
        # held around each poll and read of the agent's stdout, and by shutdown() to close it:
        # a descriptor closed between the two could be reused by another open (a job's file)
        self._io = threading.Lock()

    # ------------------------------------------------------------------ life cycle

    def launch(self) -> None:
        """Start a new jail (blocking, about a second). Raises RuntimeError on failure."""
        settings = self.pool.settings
        self.shutdown()
        office_jail.prepare_spool(self.spool, self.slot)
        profile = self.spool / "profile"
        if self.pool.template is not None:
            shutil.copytree(self.pool.template, profile, symlinks=True)
        else:
            office.write_profile(profile)
        if office_jail.as_root():
            for path in [profile, *profile.rglob("*")]:
                office_jail.give(path, self.slot)
        config = json.dumps(
            {
                "memory": settings.memory,
                "nproc": office_jail.NPROC_LIMIT,
                "profile": "file:///spool/profile",
                "soffice": office_jail.soffice_bin(),
                "start_timeout": START_TIMEOUT,
            }
        )
        cgroups = office_jail.make_cgroup(self.slot, settings.memory)
        self._buffer.clear()
        log_fd = os.open(self.dir / "stderr.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = self.pool.spawn(
                office_jail.command(self.spool, self.slot, config),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                # kept beside the spool (outside the jail) for the log line when it dies
                stderr=log_fd,
                env=office_jail.environment(),
                cwd="/",
                start_new_session=True,
                preexec_fn=lambda: office_jail.preexec(cgroups),
            )
        finally:
            os.close(log_fd)
        with self._life:
            self.proc, self.cgroups = proc, cgroups
        if self.pool.closed:
            self.shutdown()
            raise RuntimeError("the pool closed")
        try:
            hello = self._read(time.monotonic() + START_TIMEOUT + 5, lambda: False)
        except (InstanceDied, TimedOut) as exc:
            tail = self.stderr_tail()[-300:]
            self.shutdown()
            raise RuntimeError(f"LibreOffice did not start ({exc!r}): {tail}") from None
        if not hello.get("ready"):
            self.shutdown()
            raise RuntimeError(f"LibreOffice did not start: {hello.get('error')}")
        self.layers = dict(hello.get("layers") or {})
        self.layers["cgroup"] = bool(self.cgroups)

    def shutdown(self) -> None:
        # the pool's close() and a replacement's launch() may both get here: take it once
        with self._life:
            proc, self.proc = self.proc, None
            cgroups, self.cgroups = self.cgroups, []
        if proc is not None:
            office_jail.kill(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            with self._io:
                for stream in (proc.stdin, proc.stdout):
                    if stream is not None:
                        with contextlib.suppress(OSError):
                            stream.close()
        office_jail.remove_cgroup(cgroups)
        shutil.rmtree(self.dir, ignore_errors=True)

    def stderr_tail(self) -> str:
        try:
            with open(self.dir / "stderr.log", "rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - 2000))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def host_pids(self) -> list[int]:
        """Every process of this jail as the host sees it (for tests and diagnostics)."""
        if self.proc is None:
            return []
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    # ------------------------------------------------------------------- requests

    def request(self, msg: dict[str, Any], deadline: float, abandoned: Callable[[], bool]) -> dict[str, Any]:
        proc = self.proc
        if proc is None or proc.stdin is None:
            raise InstanceDied
        try:
            proc.stdin.write((json.dumps(msg) + "\n").encode())
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise InstanceDied from None
        return self._read(deadline, abandoned)

    def _read(self, deadline: float, abandoned: Callable[[], bool]) -> dict[str, Any]:
        """The next JSON line from the agent, watching the deadline and the job."""
        proc = self.proc
        if proc is None or proc.stdout is None:
            raise InstanceDied
        stdout = proc.stdout
        fd = stdout.fileno()
        while True:
            if b"\n" in self._buffer:
                line, _, rest = bytes(self._buffer).partition(b"\n")
                self._buffer[:] = rest
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if isinstance(msg, dict):
                    return msg
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimedOut
            if abandoned():
                raise Abandoned
            with self._io:
                if stdout.closed:  # by shutdown(): the number may already be another file's
                    raise InstanceDied
                try:
                    # poll, not select: a busy worker may hold descriptors above FD_SETSIZE
                    poller = select.poll()
                    poller.register(fd, select.POLLIN | select.POLLHUP)
                    ready = poller.poll(min(left, 0.2) * 1000)
                    chunk = os.read(fd, 65536) if ready else None
                except OSError as exc:
                    raise InstanceDied(str(exc)) from None
            if chunk is not None:
                if not chunk:
                    raise InstanceDied
                self._buffer += chunk
                if len(self._buffer) > 1024 * 1024:
                    raise InstanceDied  # not our agent speaking any more


@dataclasses.dataclass
class Job:
    """One conversion as the broker hands it over: open files, never paths of the child's."""

    input_fd: int
    output_fd: int
    input_format: str
    output_format: str
    import_filter: str
    import_options: str
    export_filter: str
    export_options: str
    filter_data: dict[str, tuple[str, Any]]
    # a job sent without a sandbox child (converters/tools/office/direct.py): the agent runs
    # the link guard on the input first, and says whether the PDF has a page (has_pages)
    guard: bool = False
    has_pages: bool | None = None

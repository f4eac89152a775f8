"""The fork server: `python -P -m converters.sandbox.forkserver <control fd> [family]`, per worker process.

It imports every converter and their heavy libraries once (Pillow and its plugins,
pypdfium2, pikepdf, py7zr, libarchive, openpyxl, libmagic's database...), or with a family
only that family's (`converters.sandbox.preload`: a smaller server forks faster), then
forks one child per job (`converters.sandbox.spares`, forked ahead of its job): no
interpreter start and no import per job, still one process per job (no job ever shares
memory with another), and each child isolates itself before touching input
(`converters.sandbox.isolation`).

It stays single-threaded (fork in a threaded process copies locks held by other threads)
and talks to its worker over a SOCK_SEQPACKET control socket. A job request is one message:
its disk cap as JSON plus five descriptors (SCM_RIGHTS): a memfd holding the spec, the
message pipe and the output pipe the child writes to, a status socket, and the job's
directory. The zygote never reads the spec: no job's options, names or paths ever sit in
its memory, so no later child (another tenant's job) inherits them. On the status socket the
zygote answers
``{"pid": n}`` and, once the child is reaped, ``{"status": exit code, ...}``; the worker
writes ``kill`` there, or just closes it, to have the job killed. The zygote kills all its
jobs and exits when the control socket closes (its worker is gone).

As root each job gets its own pid namespace: the zygote unshares CLONE_NEWPID before the
fork and returns to its own with setns after it. Pid 1 of that namespace is a `cat` reading
a pipe that only the zygote holds open (it exits when the zygote does), spawned with
posix_spawn (vfork: cheap): the converter is pid 2, so the kernel's special
treatment of pid 1 (signals without a handler are ignored: SIGXCPU, SIGABRT) does not
change how a job ends, and killing pid 1 kills every process the job started.
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import gc
import json
import os
import selectors
import signal
import socket
import sys
import tempfile
import time
import traceback
from typing import Any

from converters.sandbox import isolation, tree
from converters.sandbox.preload import ALL, FAMILY_HEAP, preload
from converters.sandbox.spares import MAX_FDS, Spares, recv
from converters.tools import process

DISK_CHECK_SECONDS = 0.5


@dataclasses.dataclass
class _Job:
    pid: int
    init_pid: int | None
    status: socket.socket
    workdir_fd: int
    disk_bytes: int
    next_check: float
    disk_exceeded: bool = False


def _disk_usage(dir_fd: int, cap: int) -> int:
    """Bytes allocated under the directory dir_fd, counting stops once over cap."""
    total = 0
    for _top, dirs, files, top_fd in os.fwalk(".", dir_fd=dir_fd):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                total += os.stat(name, dir_fd=top_fd, follow_symlinks=False).st_blocks * 512
        if total > cap:
            break
    return total


class Zygote:
    """The fork server: takes jobs on its control socket, hands each to a spare, reaps them."""

    def __init__(self, control: socket.socket, heap_bytes: int = 0) -> None:
        self.control = control
        self.jobs: dict[int, _Job] = {}
        self.selector = selectors.DefaultSelector()
        # where each job mounts its tree, inside its own mount namespace (never in ours)
        self.mount_point = tempfile.mkdtemp(prefix="convertd-root-")
        self.spares = Spares(self.mount_point, heap_bytes)
        with contextlib.suppress(Exception):
            # the tree's steps, worked out once for every job (see tree.skeleton_plan)
            tree.skeleton_plan(self.mount_point, tree.tree_paths())
        gc.freeze()

    def _start(self, data: bytes, fds: list[int]) -> None:
        if len(fds) != MAX_FDS:
            for fd in fds:
                os.close(fd)
            return
        spec_fd, msg_fd, out_fd, status_fd, workdir_fd = fds
        status = socket.socket(fileno=status_fd)
        try:
            disk_bytes = int(json.loads(data)["disk_bytes"])
            for attempt in (1, 2):
                spare = self.spares.take()
                try:
                    spare.sock.sendmsg([b"job"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                   array.array("i", [spec_fd, msg_fd, out_fd]))])  # fmt: skip
                    break
                except OSError:  # it died waiting: fork another
                    self.spares.discard(spare)
                    if attempt == 2:
                        raise
        except Exception as exc:
            # the worker hears of it at once; nothing was started
            with contextlib.suppress(OSError):
                status.send(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
            status.close()
            os.close(workdir_fd)
            return
        finally:
            for fd in (spec_fd, msg_fd, out_fd):
                os.close(fd)
        spare.sock.close()
        job = _Job(spare.pid, spare.init_pid, status, workdir_fd, disk_bytes,
                   time.monotonic() + DISK_CHECK_SECONDS)  # fmt: skip
        self.jobs[spare.pid] = job
        with contextlib.suppress(OSError):
            status.send(json.dumps({"pid": spare.pid}).encode())
        self.selector.register(status, selectors.EVENT_READ, ("status", spare.pid))

    def _kill(self, job: _Job) -> None:
        # pid 1 of the job's namespace first: the kernel then kills everything in it
        if job.init_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(job.init_pid, signal.SIGKILL)
        process.kill_group(job.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(job.pid, signal.SIGKILL)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.spares.inits.discard(pid)
            if self.spares.spare is not None and pid == self.spares.spare.pid:  # died waiting: make another
                spare, self.spares.spare = self.spares.spare, None
                self.spares.discard(spare)
            job = self.jobs.pop(pid, None)
            if job is None:
                continue
            if job.init_pid:  # helpers the job left behind go with its namespace
                with contextlib.suppress(ProcessLookupError):
                    os.kill(job.init_pid, signal.SIGKILL)
            process.kill_group(pid)
            reply = {"status": os.waitstatus_to_exitcode(status), "disk": job.disk_exceeded}
            with contextlib.suppress(OSError, ValueError):
                job.status.send(json.dumps(reply).encode())
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(job.status)
            job.status.close()
            os.close(job.workdir_fd)

    def _check_disks(self) -> None:
        now = time.monotonic()
        for job in list(self.jobs.values()):
            if job.disk_bytes <= 0 or job.disk_exceeded or now < job.next_check:
                continue
            started = time.monotonic()
            if _disk_usage(job.workdir_fd, job.disk_bytes) > job.disk_bytes:
                job.disk_exceeded = True
                self._kill(job)
            # a huge tree is walked less often: the watch must not slow the server down
            spent = time.monotonic() - started
            job.next_check = time.monotonic() + max(DISK_CHECK_SECONDS, 20 * spent)

    def _timeout(self) -> float | None:
        checks = [j.next_check for j in self.jobs.values() if j.disk_bytes > 0 and not j.disk_exceeded]
        return max(0.0, min(checks) - time.monotonic()) if checks else None

    def serve(self, ready: dict[str, Any]) -> None:
        """The fork server's one event loop: control requests, child exits, wake-ups.

        Long on purpose: a select loop whose branches share the selector and the table of
        running children; each branch is a few lines."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_w)
        self.selector.register(self.control, selectors.EVENT_READ, ("control", 0))
        self.selector.register(wake_r, selectors.EVENT_READ, ("wake", 0))
        self.control.send(json.dumps(ready).encode())
        draining = False
        try:
            while True:
                if self.spares.spare is None and not draining:
                    # the next job's process, forked and half-isolated before it is needed
                    try:
                        self.spares.spare = self.spares.spawn()
                    except OSError:
                        traceback.print_exc()  # out of processes: the next job forks its own
                for key, _ in self.selector.select(self._timeout()):
                    what, pid = key.data
                    if what == "control":
                        data, fds = recv(self.control)
                        if not data and not fds:
                            # retired, or the worker is gone: no new jobs; the running ones
                            # end on their own, or are killed when their status socket closes
                            self.selector.unregister(self.control)
                            draining = True
                            continue
                        self._start(data, fds)
                    elif what == "wake":
                        with contextlib.suppress(BlockingIOError):
                            while os.read(wake_r, 512):
                                pass
                        self._reap()
                    elif what == "status":
                        sock = key.fileobj
                        assert isinstance(sock, socket.socket)
                        if sock.fileno() < 0:  # its job was reaped earlier in this round
                            continue
                        job = self.jobs.get(pid)
                        try:
                            request = sock.recv(64)
                        except OSError:
                            request = b""
                        if job is not None:
                            self._kill(job)
                        if not request:
                            # the worker let go of this job: nobody to answer
                            self.selector.unregister(sock)
                self._reap()
                self._check_disks()
                if draining and not self.jobs:
                    return
        finally:
            if self.spares.spare is not None:
                self.spares.discard(self.spares.spare)
            for job in self.jobs.values():
                self._kill(job)
            for pid in self.spares.inits:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.rmdir(self.mount_point)


def main() -> int:
    control = socket.socket(fileno=int(sys.argv[1]))
    os.set_inheritable(control.fileno(), False)
    os.chdir("/")
    family = sys.argv[2] if len(sys.argv) > 2 else ALL
    preload(family)
    zygote = Zygote(control, FAMILY_HEAP.get(family, 0))
    try:
        layers = zygote.spares.probe()
    except Exception:
        traceback.print_exc()
        layers = dict.fromkeys(isolation.LAYERS, False)
    # native threads too (a library's pool started at import), which threading cannot see
    threads = len(os.listdir("/proc/self/task"))
    zygote.serve({"ready": True, "layers": layers, "threads": threads, "pid": os.getpid()})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A job's process, forked by the fork server ahead of its job (a "spare").

The spare enters every isolation layer that does not depend on the job while it waits
(`isolation.prepare`), then receives the job's spec memfd and pipes, finishes isolating
itself and runs the job (`child.run_job`). As root each spare gets its own pid namespace:
the fork server unshares CLONE_NEWPID before the fork and returns to its own with setns
after it; pid 1 of that namespace is a `cat` on a pipe only the fork server holds open.
`Spares.probe` runs the isolation once, as a job would, to report which layers hold.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from converters.sandbox import child, heap, isolation, kernel
from converters.tools import process

MAX_FDS = 5  # spec memfd, message pipe, output pipe, status socket, job directory


@dataclasses.dataclass
class Spare:
    pid: int
    init_pid: int | None
    sock: socket.socket


def recv(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One message and the descriptors it carries (close-on-exec: no helper inherits them)."""
    size = 4 * MAX_FDS
    msg, anc, _flags, _addr = sock.recvmsg(1 << 20, socket.CMSG_SPACE(size), socket.MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += [int.from_bytes(data[i : i + 4], sys.byteorder) for i in range(0, len(data) - 3, 4)]
    return msg, fds


def read_spec(fd: int) -> dict[str, Any]:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    os.close(fd)
    spec: dict[str, Any] = json.loads(b"".join(chunks))
    return spec


class Spares:
    """The fork server's spare job processes: the one forked ahead, and each one's pid 1."""

    def __init__(self, mount_point: str, heap_bytes: int = 0) -> None:
        self.pid = os.getpid()  # the fork server's
        self.mount_point = mount_point
        self.heap_bytes = heap_bytes  # mapped by each spare while it waits (heap.prefault)
        self.inits: set[int] = set()
        # pid 1 of a job's namespace dies with us, and with it every process of the job:
        # it is a `cat` reading a pipe only we hold open, so it ends when we do, however we
        # end (one exec; `setpriv --pdeathsig` then `sleep` took two, ~0.8 ms more per job)
        self.init_argv = [shutil.which("cat") or "/bin/cat"]
        self.lifeline_r, self.lifeline_w = os.pipe2(os.O_CLOEXEC)
        self.pidns_fd = self._pid_namespaces()
        self.spare: Spare | None = None

    def _pid_namespaces(self) -> int | None:
        """Our pid namespace's fd when we may make one per job (root), else None."""
        if os.geteuid() != 0:
            return None
        try:
            fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            kernel.unshare(kernel.CLONE_NEWPID)
            kernel.setns(fd, kernel.CLONE_NEWPID)
        except OSError:
            os.close(fd)
            return None
        return fd

    def _spawn_init(self) -> int:
        """Pid 1 of the pid namespace we just unshared (posix_spawn: vfork, no copy of us)."""
        return os.posix_spawn(self.init_argv[0], self.init_argv, {}, setsid=True,
                              file_actions=[(os.POSIX_SPAWN_DUP2, self.lifeline_r, 0)])  # fmt: skip

    def _main(self, sock_fd: int, uid: int | None, in_pid_ns: bool) -> None:
        """A job's process, forked before its job: it enters every layer that does not
        depend on the job, waits for one, finishes isolating itself, runs it and exits."""
        code = 1
        try:
            os.setsid()  # a process group of its own, which the worker's kill reaches
            process.die_with_parent()
            if os.getppid() != self.pid and not in_pid_ns:
                os._exit(1)
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.dup2(sock_fd, 3, inheritable=False)
            # nothing of the zygote or of other jobs (their sockets and pipes) stays open
            os.closerange(4, 1 << 20)
            forked = time.monotonic()
            prep = isolation.prepare(self.mount_point, in_pid_ns=in_pid_ns, uid=uid)
            heap.prefault(self.heap_bytes)
            prepared = time.monotonic()
            _data, fds = recv(socket.socket(fileno=3))
            if len(fds) != 3:
                os._exit(0)  # let go unused (the zygote is stopping)
            started = time.monotonic()
            spec_fd, msg_fd, out_fd = fds
            os.dup2(out_fd, 1)
            os.dup2(out_fd, 2)
            os.close(out_fd)
            channel = child._Channel(os.fdopen(msg_fd, "w", encoding="utf-8"))
            spec = read_spec(spec_fd)
            spec["parent"] = None if in_pid_ns else self.pid
            spec["spare_times"] = {"forked": forked, "prepared": prepared}
            code = child.run_job(spec, channel, prep, started)
        except BaseException:
            with contextlib.suppress(Exception):
                traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            # close our ends before exiting: the worker hears the job is over now, not after
            # the kernel has torn down this process's memory
            with contextlib.suppress(OSError):
                os.closerange(1, 1 << 20)
            os._exit(code)

    def spawn(self) -> Spare:
        """Fork the next job's process (in a new pid namespace when we can)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        init_pid = None
        try:
            if self.pidns_fd is not None:
                kernel.unshare(kernel.CLONE_NEWPID)
                try:
                    init_pid = self._spawn_init()
                except OSError:
                    kernel.setns(self.pidns_fd, kernel.CLONE_NEWPID)
                    raise
                self.inits.add(init_pid)
            uid = isolation.UID_BASE + init_pid if init_pid else None
            sys.stdout.flush()
            sys.stderr.flush()
            try:
                pid = os.fork()
            except OSError:
                if init_pid:
                    os.kill(init_pid, signal.SIGKILL)
                raise
            finally:
                if self.pidns_fd is not None and os.getpid() == self.pid:
                    kernel.setns(self.pidns_fd, kernel.CLONE_NEWPID)
            if pid == 0:
                self._main(theirs.fileno(), uid, init_pid is not None)
        except BaseException:
            ours.close()
            raise
        finally:
            if os.getpid() == self.pid:
                theirs.close()
        return Spare(pid, init_pid, ours)

    def take(self) -> Spare:
        spare, self.spare = self.spare, None
        return spare if spare is not None else self.spawn()

    def discard(self, spare: Spare) -> None:
        spare.sock.close()
        for pid in (spare.init_pid, spare.pid):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def probe(self) -> dict[str, bool]:
        """Run the isolation once, as a job would, and report which layers held."""
        with tempfile.TemporaryDirectory(prefix="convertd-probe-") as tmp:
            workdir = Path(tmp) / "job"
            (workdir / "tmp").mkdir(parents=True)
            (workdir / "in").mkdir()
            read_fd, write_fd = os.pipe()
            init_pid = None
            if self.pidns_fd is not None:
                kernel.unshare(kernel.CLONE_NEWPID)
                with contextlib.suppress(OSError):
                    init_pid = self._spawn_init()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    os.close(read_fd)
                    limits = {"memory_bytes": 1 << 31, "cpu_seconds": 10, "output_bytes": 1 << 20}
                    uid = isolation.UID_BASE + init_pid if init_pid else None
                    in_ns = init_pid is not None
                    layers = isolation.enter(
                        workdir, limits, self.mount_point, in_pid_ns=in_ns, strict=False, uid=uid
                    )
                    layers["uid"] = layers["uid"] and os.getuid() != 0
                    os.write(write_fd, json.dumps(layers).encode())
                    code = 0
                finally:
                    os._exit(code)
            if self.pidns_fd is not None:
                kernel.setns(self.pidns_fd, kernel.CLONE_NEWPID)
            os.close(write_fd)
            with os.fdopen(read_fd, "rb") as fh:
                data = fh.read()
            os.waitpid(pid, 0)
            if init_pid:
                os.kill(init_pid, signal.SIGKILL)
                os.waitpid(init_pid, 0)
        try:
            layers = json.loads(data)
        except ValueError:
            layers = {}
        return {name: bool(layers.get(name)) for name in isolation.LAYERS}

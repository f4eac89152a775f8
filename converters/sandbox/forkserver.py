"""The fork server: `python -P -m converters.sandbox.forkserver <control fd> [family]`, per worker process.

It imports every converter and their heavy libraries once (Pillow and its plugins, PyAV,
PyMuPDF, pypdf, py7zr, libarchive, openpyxl, libmagic's database...), or with a family
only that family's (`FAMILY_PRELOAD`: a smaller server forks faster), then forks one child
per job: no interpreter start and no import per job, still one process per job (no job
ever shares memory with another), and each child isolates itself before touching input
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
import importlib
import json
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from converters.sandbox import child, isolation, kernel, tree

MAX_FDS = 5  # spec memfd, message pipe, output pipe, status socket, job directory
DISK_CHECK_SECONDS = 0.5

# The heavy libraries the converters import lazily, or whose plugins load on first use.
PRELOAD: tuple[str, ...] = (
    "PIL.Image", "PIL.ImageOps", "PIL.ImageCms", "pi_heif", "imagecodecs", "av", "pypdfium2",
    "pikepdf", "img2pdf", "py7zr", "libarchive", "openpyxl", "python_calamine", "magic", "yaml",
    "defusedxml.ElementTree", "tomli_w", "ffmpeg", "imageio_ffmpeg", "resvg_py", "tempfile",
    "converters.sniff", "converters.sandbox.child", "converters.sandbox.seccomp",
)  # fmt: skip


# A fork server that holds only what some converters use (`converters.sandbox.servers.FAMILIES`):
# a fork copies the page tables of every mapping the server holds, so the smaller the
# server, the cheaper each job (measured: fork + exit ~4 ms of CPU for this one, ~11 ms
# for a server holding every converter's libraries).
FAMILY_PRELOAD: dict[str, tuple[str, ...]] = {
    "image": (
        "PIL.Image", "PIL.ImageOps", "PIL.ImageCms", "pi_heif", "imagecodecs", "numpy", "resvg_py",
        "defusedxml.ElementTree", "magic", "tempfile", "converters.filetypes.image.converter",
        "converters.filetypes.hash", "converters.sniff", "converters.sandbox.child",
        "converters.sandbox.seccomp",
    ),
    # office and pandoc documents: their engines run outside (the warm LibreOffice pool,
    # pandoc's binary); the job itself needs little more than the XML guard
    "document": (
        "pypdfium2", "pypandoc", "defusedxml.ElementTree", "defusedxml.expatreader", "magic",
        "tempfile", "converters.filetypes.document", "converters.filetypes.ebook",
        "converters.tools.office.soffice", "converters.tools.office.links", "converters.tools.office.door",
        "converters.tools.process", "converters.tools.pandoc", "converters.sniff",
        "converters.sandbox.child", "converters.sandbox.seccomp",
    ),
}  # fmt: skip
ALL = "all"  # the fork server that imports every converter


def preload(family: str = ALL) -> None:
    """Import what jobs use, so a forked child starts with it in memory."""
    from converters.registry import CONVERTERS, registry

    names = FAMILY_PRELOAD.get(family) or PRELOAD + tuple(c.partition(":")[0] for c in CONVERTERS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            with contextlib.suppress(Exception):
                importlib.import_module(name)
        if "PIL.Image" in names:
            with contextlib.suppress(Exception):
                from PIL import Image

                Image.init()  # every format plugin, not only the five Pillow loads at first
        if family not in FAMILY_PRELOAD:
            with contextlib.suppress(Exception):
                registry()  # (imports every converter: not in a small server)
        with contextlib.suppress(Exception):
            from converters.sandbox import seccomp

            seccomp.compiled()  # built once here, not by each job inside its tree
        with contextlib.suppress(Exception):
            tree.tree_paths()  # walked once here, not by each job's process
        with contextlib.suppress(Exception):
            from converters import sniff

            sniff._magic(True)
            sniff._magic(False)
    # objects made so far are never freed: keep the collector from touching (and so
    # copying) their pages in every child
    gc.collect()
    gc.freeze()


@dataclasses.dataclass
class _Spare:
    pid: int
    init_pid: int | None
    sock: socket.socket


@dataclasses.dataclass
class _Job:
    pid: int
    init_pid: int | None
    status: socket.socket
    workdir_fd: int
    disk_bytes: int
    next_check: float
    disk_exceeded: bool = False


def _recv(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One message and the descriptors it carries (close-on-exec: no helper inherits them)."""
    size = 4 * MAX_FDS
    msg, anc, _flags, _addr = sock.recvmsg(1 << 20, socket.CMSG_SPACE(size), socket.MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += [int.from_bytes(data[i : i + 4], sys.byteorder) for i in range(0, len(data) - 3, 4)]
    return msg, fds


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


def _read_spec(fd: int) -> dict[str, Any]:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    os.close(fd)
    spec: dict[str, Any] = json.loads(b"".join(chunks))
    return spec


class Zygote:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.pid = os.getpid()
        self.jobs: dict[int, _Job] = {}
        self.inits: set[int] = set()
        self.selector = selectors.DefaultSelector()
        # where each job mounts its tree, inside its own mount namespace (never in ours)
        self.mount_point = tempfile.mkdtemp(prefix="convertd-root-")
        # pid 1 of a job's namespace dies with us, and with it every process of the job:
        # it is a `cat` reading a pipe only we hold open, so it ends when we do, however we
        # end (one exec; `setpriv --pdeathsig` then `sleep` took two, ~0.8 ms more per job)
        self.init_argv = [shutil.which("cat") or "/bin/cat"]
        self.lifeline_r, self.lifeline_w = os.pipe2(os.O_CLOEXEC)
        self.pidns_fd = self._pid_namespaces()
        self.spare: _Spare | None = None
        with contextlib.suppress(Exception):
            # the tree's steps, worked out once for every job (see tree.skeleton_plan)
            tree.skeleton_plan(self.mount_point, tree.tree_paths())
        gc.freeze()

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

    # --------------------------------------------------------------- the job's process

    def _spare_main(self, sock_fd: int, uid: int | None, in_pid_ns: bool) -> None:
        """A job's process, forked before its job: it enters every layer that does not
        depend on the job, waits for one, finishes isolating itself, runs it and exits."""
        code = 1
        try:
            os.setsid()  # a process group of its own, which the worker's kill reaches
            kernel.die_with_parent()
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
            prepared = time.monotonic()
            _data, fds = _recv(socket.socket(fileno=3))
            if len(fds) != 3:
                os._exit(0)  # let go unused (the zygote is stopping)
            started = time.monotonic()
            spec_fd, msg_fd, out_fd = fds
            os.dup2(out_fd, 1)
            os.dup2(out_fd, 2)
            os.close(out_fd)
            channel = child._Channel(os.fdopen(msg_fd, "w", encoding="utf-8"))
            spec = _read_spec(spec_fd)
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

    def _spawn_spare(self) -> _Spare:
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
                self._spare_main(theirs.fileno(), uid, init_pid is not None)
        except BaseException:
            ours.close()
            raise
        finally:
            if os.getpid() == self.pid:
                theirs.close()
        return _Spare(pid, init_pid, ours)

    def _take_spare(self) -> _Spare:
        spare, self.spare = self.spare, None
        return spare if spare is not None else self._spawn_spare()

    # ------------------------------------------------------------------- the server side

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
                spare = self._take_spare()
                try:
                    spare.sock.sendmsg([b"job"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                   array.array("i", [spec_fd, msg_fd, out_fd]))])  # fmt: skip
                    break
                except OSError:  # it died waiting: fork another
                    self._discard(spare)
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

    def _discard(self, spare: _Spare) -> None:
        spare.sock.close()
        for pid in (spare.init_pid, spare.pid):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _kill(self, job: _Job) -> None:
        # pid 1 of the job's namespace first: the kernel then kills everything in it
        if job.init_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(job.init_pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(job.pid, signal.SIGKILL)
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
            self.inits.discard(pid)
            if self.spare is not None and pid == self.spare.pid:  # died waiting: make another
                spare, self.spare = self.spare, None
                self._discard(spare)
            job = self.jobs.pop(pid, None)
            if job is None:
                continue
            if job.init_pid:  # helpers the job left behind go with its namespace
                with contextlib.suppress(ProcessLookupError):
                    os.kill(job.init_pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
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
                if self.spare is None and not draining:
                    # the next job's process, forked and half-isolated before it is needed
                    try:
                        self.spare = self._spawn_spare()
                    except OSError:
                        traceback.print_exc()  # out of processes: the next job forks its own
                for key, _ in self.selector.select(self._timeout()):
                    what, pid = key.data
                    if what == "control":
                        data, fds = _recv(self.control)
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
            if self.spare is not None:
                self._discard(self.spare)
            for job in self.jobs.values():
                self._kill(job)
            for pid in self.inits:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.rmdir(self.mount_point)

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


def main() -> int:
    control = socket.socket(fileno=int(sys.argv[1]))
    os.set_inheritable(control.fileno(), False)
    os.chdir("/")
    preload(sys.argv[2] if len(sys.argv) > 2 else ALL)
    zygote = Zygote(control)
    try:
        layers = zygote.probe()
    except Exception:
        traceback.print_exc()
        layers = dict.fromkeys(isolation.LAYERS, False)
    threads = threading.active_count()
    zygote.serve({"ready": True, "layers": layers, "threads": threads, "pid": os.getpid()})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run one conversion in its own isolated process, forked from a preloaded fork server.

The service never calls a converter in its own process: a hostile file may crash a C
library, eat all memory, spin forever or try to escape, and that must cost one job, never
the worker or another tenant. Each worker process keeps one fork server
(`converters.sandbox.forkserver`) that imported every converter and its libraries once; `run()` asks it
for a child per job, and that child enters the job's isolation (`converters.sandbox.isolation`:
own uid, mount/pid/network namespaces where only its job directory is writable, rlimits,
no_new_privs, seccomp) before it touches input, runs that one job and exits.

The spec travels to the zygote as JSON with three descriptors: progress and the outcome
come back as JSON lines on a message pipe, because the libraries a converter uses may
print anything on stdout and stderr (those go to a second pipe, and only their tail is
kept, for logs); the exit status comes on a status socket, which is also how we kill a job
(timeout, cancellation). A zygote that died is started again by the next job; a job whose
process died fails with a clear error.

CONVERTD_SANDBOX=strict refuses to convert when a layer is missing; by default jobs run
with the layers this machine allows, and the missing ones are logged when the zygote starts
(`convertd doctor` lists them).
"""

from __future__ import annotations

import array
import asyncio
import atexit
import contextlib
import fcntl
import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from converters.base import ConversionError, Limits, Result
from converters.registry import normalize_format, registry
from converters.tools import fonts

log = logging.getLogger(__name__)

ErrorKind = Literal["converter", "memory", "cpu", "timeout", "crash", "output_size", "internal"]

PROGRESS_INTERVAL = 0.1  # seconds between forwarded progress updates (at most ~10/s)
STDERR_TAIL = 8192  # bytes of the child's stdout/stderr kept for the logs
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_ALLOC_FAILURES = ("memory allocation of", "std::bad_alloc", "Cannot allocate memory",
                   "out of memory")  # fmt: skip

_FICLONE = 0x40049409

last_timings: dict[str, float] = {}
"""Monotonic readings of the last successful job (submitted, forked, isolated, converted,
returned): for `bench/sandbox_latency.py`."""

network_isolated: bool | None = None
"""Whether the last child got its own network namespace (None: none has run yet).

False means the kernel refused (not root, no user namespaces): conversions still run, but
a converter could reach the network; `convertd doctor` should say so."""


class SandboxError(ConversionError):
    """A conversion failed inside the sandbox.

    `message` and `hint` are for the user; `kind` says why (converter error, memory, cpu,
    timeout, crash, output_size, internal) and `detail` holds the child's traceback or
    stderr tail, for the logs only: never show it to the user.
    """

    def __init__(self, message: str, hint: str | None = None, *, kind: ErrorKind, detail: str = "") -> None:
        super().__init__(message, hint)
        self.kind = kind
        self.detail = detail


def _human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"


def _copy_input(src: Path, dst: Path) -> None:
    """A private copy (a reflink where the file system shares blocks), never a hard link:
    a job must not be able to reach the stored upload, even to rewrite it."""
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        try:
            fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
        except OSError:
            _copy_data(fin.fileno(), fout.fileno(), os.fstat(fin.fileno()).st_size)
    os.chmod(dst, 0o444)


def _copy_data(fin: int, fout: int, size: int) -> None:
    """Copy in the kernel, only the parts that hold data: a sparse file stays sparse (and
    cheap), where reading it would write every zero of its holes."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fin, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            break
        end = os.lseek(fin, start, os.SEEK_HOLE)
        while start < end:
            try:
                done = os.copy_file_range(fin, fout, end - start, start, start)
            except OSError:  # across file systems on some kernels: copy it ourselves
                chunk = os.pread(fin, min(end - start, 1 << 20), start)
                done = os.pwrite(fout, chunk, start) if chunk else 0
            if done <= 0:
                break
            start += done
        pos = end
    os.ftruncate(fout, size)


def _stage_inputs(inputs: list[Path], workdir: Path) -> list[str]:
    """Copy the inputs into workdir/in/ (read-only to the job), keeping their names; return those."""
    indir = workdir / "in"
    indir.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for src in inputs:
        src = Path(src)
        if src.parent.resolve() == indir.resolve():
            names.append(src.name)  # already staged by the caller
            continue
        name = src.name
        # a name starting with "-" reads as an option to command-line tools
        if name in ("", ".", "..") or name.startswith("-"):
            name = f"input{src.suffix}" if name in ("", ".", "..") else f"_{name}"
        stem, suffix = Path(name).stem, Path(name).suffix
        n = 1
        while name in names or (indir / name).exists():
            n += 1
            name = f"{stem}-{n}{suffix}"
        _copy_input(src, indir / name)
        names.append(name)
    return names


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
DISK_ENV = "CONVERTD_JOB_DISK_BYTES"  # per-job disk cap; default 2 x output limit + inputs
ZYGOTE_START_SECONDS = 120


def strict() -> bool:
    return os.environ.get(SANDBOX_ENV, "").strip().lower() == "strict"


class ZygoteDied(Exception):
    """The fork server went away (it is started again for the next job)."""


# Jobs of these converter modules fork from a fork server that imports only their family's
# libraries (`converters.sandbox.forkserver.FAMILY_PRELOAD`); every other job from the one that imports
# everything. Forking copies the page tables of all the server holds: a tiny job's fork and
# exit cost ~4 ms of CPU from the image server, ~11 ms from the full one.
FAMILIES: dict[str, str] = {
    "converters.filetypes.image.converter": "image",
    "converters.filetypes.hash": "image",
    "converters.filetypes.document": "document",
    "converters.filetypes.ebook": "document",
}
ALL = "all"


def family_of(converter: object) -> str:
    """The fork server family whose children run this converter."""
    return FAMILIES.get(type(converter).__module__, ALL)


class _Zygote:
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


_zygotes: dict[str, _Zygote] = {}  # by family
_retired: list[_Zygote] = []
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


def _get_zygote(family: str = ALL) -> _Zygote:
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
        started = _Zygote(family)
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


class _Status:
    """The job's status socket: its pid, then how it ended; writing `kill` ends it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.pid: int | None = None
        self.returncode: int | None = None
        self.disk_exceeded = False
        self.done = False

    async def wait(self) -> int | None:
        """The exit code (negative: killed by that signal). Raises ZygoteDied."""
        loop = asyncio.get_running_loop()
        while not self.done:
            try:
                data = await loop.sock_recv(self.sock, 65536)
            except OSError as exc:
                raise ZygoteDied(str(exc)) from exc
            if not data:
                self.done = True
                raise ZygoteDied("the fork server closed the job's status socket")
            msg = json.loads(data)
            if "pid" in msg:
                self.pid = int(msg["pid"])
            elif "error" in msg:
                self.done = True
                raise ZygoteDied(str(msg["error"]))
            elif "status" in msg:
                self.returncode = int(msg["status"])
                self.disk_exceeded = bool(msg.get("disk"))
                self.done = True
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(b"kill")


async def _read_messages(
    reader: asyncio.StreamReader,
    on_progress: Callable[[float], Awaitable[None]] | None,
) -> dict[str, Any]:
    """Consume the child's message pipe; forward progress; return the final message."""
    final: dict[str, Any] = {}
    sent = 0.0
    pending: float | None = None
    last_time = 0.0

    async def forward(value: float) -> None:
        nonlocal sent, last_time, pending
        sent, last_time, pending = value, time.monotonic(), None
        if on_progress is None:
            return
        try:
            await on_progress(value)
        except Exception:  # a failing progress sink must not fail the conversion
            log.warning("progress callback failed", exc_info=True)

    while True:
        try:
            line = await reader.readline()
        except ValueError:  # an over-long line: the child is not speaking our protocol
            break
        if not line:
            break
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if not isinstance(msg, dict):
            continue
        if "progress" in msg:
            try:
                value = min(max(float(msg["progress"]), 0.0), 1.0)
            except (TypeError, ValueError):
                continue
            if value <= sent:
                continue
            if time.monotonic() - last_time >= PROGRESS_INTERVAL:
                await forward(value)
            else:
                pending = value
        elif "result" in msg or "error" in msg:
            final = msg
    if pending is not None and pending > sent and "result" in final:
        await forward(pending)
    return final


async def _drain(stream: asyncio.StreamReader, tail: bytearray) -> None:
    while chunk := await stream.read(65536):
        tail.extend(chunk)
        del tail[:-STDERR_TAIL]


def _failure(final: dict[str, Any], returncode: int | None, limits: Limits, tail: str) -> SandboxError:
    """Turn how the child ended into an error a user understands.

    One long table of cases on purpose, checked in order (the first that holds explains the
    end); it moves to converters/sandbox/failures.py with issue 11, item 2."""
    err = final.get("error")
    if isinstance(err, dict):
        kind = err.get("kind", "internal")
        detail = str(err.get("detail") or tail)
        if kind == "converter":
            return SandboxError(
                str(err.get("message") or "The conversion failed."),
                err.get("hint"),
                kind="converter",
                detail=detail,
            )
        if kind == "memory":
            return _memory_error(limits, detail)
        if kind == "isolation":
            return SandboxError(
                "This server cannot convert safely: its sandbox is incomplete.",
                "An operator must fix it; `convertd doctor` lists what is missing.",
                kind="internal",
                detail=detail,
            )
        if kind == "output_size":
            return SandboxError(
                f"The output grew larger than {_human_bytes(limits.output_bytes)}, "
                "the limit for one conversion.",
                "Ask for a smaller output (lower resolution or quality, fewer pages).",
                kind="output_size",
                detail=detail,
            )
        return SandboxError(
            "The conversion failed unexpectedly.",
            "The file may be damaged or use a feature we do not support.",
            kind="internal",
            detail=detail,
        )
    if returncode is not None and returncode < 0:
        sig = -returncode
        if sig == signal.SIGXCPU:
            return SandboxError(
                f"The conversion used more than {limits.cpu_seconds} s of CPU time and was stopped.",
                "Try a smaller file or lighter options.",
                kind="cpu",
                detail=tail,
            )
        if sig == signal.SIGSYS:
            # the seccomp filter killed it: a system call no converter needs
            return SandboxError(
                "The conversion was stopped: the converter attempted an operation the sandbox "
                "forbids (a blocked system call).",
                "The file may be crafted to attack the converter.",
                kind="crash",
                detail=tail,
            )
        if sig == signal.SIGKILL:
            # We did not kill it (that path raises a timeout): the kernel did, which in
            # practice means the OOM killer or the hard CPU limit.
            return _memory_error(limits, tail)
        if sig == signal.SIGABRT and any(m in tail for m in _ALLOC_FAILURES):
            return _memory_error(limits, tail)  # Rust and C++ abort when malloc fails
        if sig == signal.SIGXFSZ:
            return SandboxError(
                f"The output grew larger than {_human_bytes(limits.output_bytes)}, "
                "the limit for one conversion.",
                "Ask for a smaller output.",
                kind="output_size",
                detail=tail,
            )
        return SandboxError(
            f"The converter crashed (signal {sig}).",
            "The file may be damaged or crafted to crash the converter.",
            kind="crash",
            detail=tail,
        )
    return SandboxError(
        "The conversion failed unexpectedly.",
        "The file may be damaged or use a feature we do not support.",
        kind="internal",
        detail=f"exit code {returncode}\n{tail}",
    )


def _memory_error(limits: Limits, detail: str) -> SandboxError:
    return SandboxError(
        f"The conversion needed more than {_human_bytes(limits.memory_bytes)} of memory and was stopped.",
        "Try a smaller file (fewer pixels, pages or rows).",
        kind="memory",
        detail=detail,
    )


def _result_path(rel: str, workdir: Path) -> Path:
    path = (workdir / rel).resolve()
    root = workdir.resolve()
    if not path.is_relative_to(root) or not path.is_file() or (workdir / rel).is_symlink():
        raise SandboxError(
            "The conversion failed unexpectedly.",
            None,
            kind="internal",
            detail=f"converter returned an invalid output path: {rel!r}",
        )
    if os.geteuid() == 0 and path.stat().st_uid != 0:
        # what we hand back is ours again, not the job's uid (a chown also drops any
        # set-id bit the job put on it); nothing of the job can still write to it
        os.chown(path, 0, 0)
        os.chmod(path, 0o644)
    return path


async def run(
    filetype: str,
    input_format: str,
    output_format: str,
    options: dict[str, Any],
    inputs: list[Path],
    workdir: Path,
    on_progress: Callable[[float], Awaitable[None]] | None = None,
    limits: Limits | None = None,
) -> Result:
    """Convert `inputs` inside `workdir` in a limited child process.

    Options are validated again here (a RequestError for a bad pair or option, as from
    `registry().validate`). Returns the Result with an absolute path inside `workdir`;
    raises SandboxError (a ConversionError) on any failure of the conversion, and kills the
    child's whole process group on timeout or cancellation.

    Long on purpose, for now: the descriptors, pipes, socket and child opened here are
    released by its `finally` blocks in one fixed order. It is split into parent side and
    failures when converters/ becomes packages (issue 11, item 2: converters/sandbox/).
    """
    input_format, output_format = normalize_format(input_format), normalize_format(output_format)
    reg = registry()
    conv = reg.find(filetype, input_format, output_format)
    # idempotent on already validated options; fills defaults when the caller did not
    options = reg.validate(filetype, input_format, output_format, options)
    limits = limits or conv.limits
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tmp").mkdir(exist_ok=True)
    loop = asyncio.get_running_loop()
    # copies can take seconds (large uploads): never on the event loop
    names = await loop.run_in_executor(None, _stage_inputs, [Path(p) for p in inputs], workdir)
    spec: dict[str, Any] = {
        "converter": f"{type(conv).__module__}:{type(conv).__qualname__}",
        "filetype": filetype,
        "input_format": input_format,
        "output_format": output_format,
        "options": options,
        "inputs": [f"in/{name}" for name in names],
        "workdir": str(workdir),
        "limits": {
            "memory_bytes": limits.memory_bytes,
            "cpu_seconds": limits.cpu_seconds,
            "output_bytes": limits.output_bytes,
        },
    }

    inputs_total = sum((workdir / "in" / name).stat().st_size for name in names)
    disk = os.environ.get(DISK_ENV, "").strip()
    spec["limits"]["disk_bytes"] = int(disk) if disk.isdigit() else 2 * limits.output_bytes + inputs_total
    spec["strict"] = strict()

    family = family_of(conv)
    zygote = _zygotes.get(family)
    if zygote is None or not zygote.alive():
        try:
            zygote = await loop.run_in_executor(None, _get_zygote, family)
        except (ZygoteDied, OSError) as exc:
            raise SandboxError(
                "The conversion could not start: the sandbox is not available.",
                "Try again; if it keeps failing, the operator should run `convertd doctor`.",
                kind="internal",
                detail=f"starting the fork server failed: {exc}",
            ) from exc
    if spec["strict"] and zygote.missing:
        raise SandboxError(
            "This server refuses to convert: its sandbox is incomplete.",
            "The operator set CONVERTD_SANDBOX=strict; `convertd doctor` lists what is missing.",
            kind="internal",
            detail="missing sandbox layers: " + ", ".join(zygote.missing),
        )

    # the spec goes to the job's process alone, in a memfd the fork server passes on unread
    submitted = time.monotonic()
    spec_fd = os.memfd_create("convertd-spec", os.MFD_CLOEXEC)
    os.write(spec_fd, json.dumps(spec).encode())
    os.lseek(spec_fd, 0, os.SEEK_SET)
    workdir_fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    msg_r, msg_w = os.pipe()
    out_r, out_w = os.pipe()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    header = {"disk_bytes": spec["limits"]["disk_bytes"]}
    fds = [spec_fd, msg_w, out_w, theirs.fileno(), workdir_fd]
    try:
        try:
            zygote.submit(header, fds)
        except ZygoteDied:
            zygote.dead = True  # started again at once: this job need not fail for it
            zygote = await loop.run_in_executor(None, _get_zygote, family)
            zygote.submit(header, fds)
    except BaseException:
        for fd in (msg_r, out_r):
            os.close(fd)
        ours.close()
        raise
    finally:
        # the child holds its copies: EOF on ours means it and its helpers are gone
        for fd in (spec_fd, msg_w, out_w, workdir_fd):
            os.close(fd)
        theirs.close()

    status = _Status(ours)
    reader = asyncio.StreamReader(limit=1024 * 1024)
    stdout = asyncio.StreamReader(limit=2**16)
    messages = os.fdopen(msg_r, "rb", buffering=0)
    output = os.fdopen(out_r, "rb", buffering=0)
    transports: list[asyncio.ReadTransport] = []
    tail = bytearray()
    timed_out = lost = False
    final: dict[str, Any] = {}
    try:
        for stream, pipe in ((reader, messages), (stdout, output)):
            transport, _ = await loop.connect_read_pipe(
                functools.partial(asyncio.StreamReaderProtocol, stream), pipe
            )
            transports.append(transport)

        async def supervise() -> dict[str, Any]:
            drain = asyncio.ensure_future(_drain(stdout, tail))
            try:
                msg = await _read_messages(reader, on_progress)
                if "result" not in msg:
                    # how it ended says why it failed; after a result the process only exits
                    # (it closed its channel first), and tearing down its memory takes a few
                    # ms this job need not wait for
                    await status.wait()
                # a helper left running in the background may hold stdout open: don't wait
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(drain), 2)
                return msg
            finally:
                drain.cancel()

        try:
            final = await asyncio.wait_for(supervise(), timeout=limits.wall_seconds)
        except TimeoutError:
            timed_out = True
        except ZygoteDied:
            lost = True
    finally:
        # On success the job is gone already; on timeout, cancellation or any error here,
        # this is what stops a runaway converter and every process it started.
        if not status.done:
            # the fork server kills the job's whole pid namespace (or process group)
            status.kill()
            if "result" not in final:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(status.wait()), 10)
        ours.close()
        for transport in transports:
            transport.close()
        for pipe in (messages, output):
            if len(transports) < 2:
                pipe.close()

    global network_isolated
    if "isolated" in final:
        network_isolated = bool(final["isolated"])
    if isinstance(final.get("times"), dict):
        last_timings.clear()
        last_timings.update(submitted=submitted, **final["times"], returned=time.monotonic())
    tail_text = tail.decode("utf-8", "replace")
    if lost:
        raise SandboxError(
            "The conversion was interrupted: the process running it was lost.",
            "Try again.",
            kind="crash",
            detail=f"the sandbox's fork server stopped during the job\n{tail_text}",
        )
    if timed_out:
        raise SandboxError(
            f"The conversion took longer than {limits.wall_seconds} s and was stopped.",
            "Try a smaller file or lighter options.",
            kind="timeout",
            detail=tail_text,
        )
    result = final.get("result")
    if status.disk_exceeded:
        raise SandboxError(
            f"The conversion wrote more than {_human_bytes(spec['limits']['disk_bytes'])} to disk, "
            "the limit for one conversion.",
            "Try a smaller file or ask for a smaller output.",
            kind="output_size",
            detail=tail_text,
        )
    if isinstance(result, dict) and status.returncode in (0, None):
        items = result.get("items") or []
        return Result(_result_path(str(result.get("path", "")), workdir), [str(i) for i in items])
    raise _failure(final, status.returncode, limits, tail_text)

"""Run one conversion in a fresh, limited child process.

The service never calls a converter in its own process: a hostile file may crash a C
library, eat all memory or spin forever, and that must cost one job, never the worker.
`run()` starts `python -m converters.child` in its own session (so the whole process group,
helpers such as ffmpeg or soffice included, can be killed), with memory, CPU, file-size and
core limits, a wall-clock timeout, the job's directory as cwd and HOME, a minimal
environment and, where the kernel lets us, a private network namespace with no way out.

The spec travels to the child on stdin as JSON; progress and the outcome come back as JSON
lines on a dedicated pipe, because the libraries a converter uses may print anything on
stdout and stderr (those are merged, and only their tail is kept, for logs).

To save the interpreter's start-up and the common imports, each process keeps one or two
"warm" children: started (with the same session, environment scrubbing and death-with-
parent) before any job exists, they wait for a spec. A job takes one, a replacement starts
at once; the child enters the job's directory, environment, limits and network namespace
after the spec arrives, runs that one job and exits. CONVERTD_SANDBOX_WARM sets how many are
kept (0 turns this off: a fresh interpreter per job, started with the job's cwd and HOME).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from converters.base import ConversionError, Limits, Result
from converters.registry import normalize_format, registry

log = logging.getLogger(__name__)

ErrorKind = Literal["converter", "memory", "cpu", "timeout", "crash", "output_size", "internal"]

PROGRESS_INTERVAL = 0.1  # seconds between forwarded progress updates (at most ~10/s)
STDERR_TAIL = 8192  # bytes of the child's stdout/stderr kept for the logs
_PROJECT_ROOT = Path(__file__).resolve().parent.parent
_ALLOC_FAILURES = ("memory allocation of", "std::bad_alloc", "Cannot allocate memory",
                   "out of memory")  # fmt: skip

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


def _stage_inputs(inputs: list[Path], workdir: Path) -> list[str]:
    """Hard-link (or copy) the inputs into workdir/in/, keeping their names; return those."""
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
        dst = indir / name
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
        names.append(name)
    return names


def _child_env(workdir: Path | None) -> dict[str, str]:
    """Only what a converter needs: no proxies, credentials or service configuration.

    Without a workdir (a warm child, started before its job exists) HOME and TMPDIR point
    nowhere until the child sets them from the spec."""
    # The child must import the same code as we do (tests add their own modules to the path);
    # the job directory itself is never on the path (the child runs with -P).
    paths = [str(_PROJECT_ROOT)] + [p for p in sys.path if p and os.path.isdir(p)]
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(workdir) if workdir else "/nonexistent",
        "TMPDIR": str(workdir / "tmp") if workdir else "/nonexistent",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
    }


def _kill_group(proc: asyncio.subprocess.Process | _WarmChild) -> None:
    # The child leads its own session, so its pid is the process group id of every helper
    # it started (unless one of them called setsid itself).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


WARM_ENV = "CONVERTD_SANDBOX_WARM"
WARM_DEFAULT = 1
WARM_MAX = 2


def warm_size() -> int:
    """How many warm children to keep (CONVERTD_SANDBOX_WARM, 0 to 2; 0: none)."""
    value = os.environ.get(WARM_ENV, "").strip()
    try:
        return max(0, min(int(value), WARM_MAX)) if value else WARM_DEFAULT
    except ValueError:
        return WARM_DEFAULT


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _WarmChild:
    """A `converters.child --warm` started before its job: it waits on stdin for one spec.

    A plain Popen, not an asyncio subprocess: it is started in one call of `run()` and used
    by a later one, which may run on another event loop. The loop it ends up serving reads
    its pipes and hears of its exit through a pidfd.
    """

    def __init__(self, preload: str | None = None) -> None:
        self.env = _child_env(None)
        read_fd, write_fd = os.pipe()
        hint = [preload] if preload else []
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-P", "-m", "converters.child", str(write_fd), "--warm", *hint],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd="/",
                env=self.env,
                pass_fds=(write_fd,),  # and nothing else: close_fds is on
                start_new_session=True,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.read_fd = read_fd  # ours is close-on-exec: no other child inherits it
        self.owner = os.getpid()
        # PR_SET_PDEATHSIG fires when the *thread* that started it ends
        self.thread = threading.current_thread()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def usable(self) -> bool:
        """Still waiting, ours (not a copy from before a fork), started by this thread (it
        dies with its starter) and started as we would start one now."""
        return (
            self.owner == os.getpid()
            and self.thread is threading.current_thread()
            and self.popen.poll() is None
            and self.env == _child_env(None)
        )

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()

    def discard(self) -> None:
        """Kill it, reap it and close our ends of its pipes (never used for a job)."""
        if self.owner == os.getpid():
            _kill_group(self)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)
        self.close()

    def close(self) -> None:
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1

    async def send(self, data: bytes) -> None:
        """Write the spec to its stdin without blocking the loop, then close it."""
        assert self.popen.stdin is not None
        fd = self.popen.stdin.fileno()
        os.set_blocking(fd, False)
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:
                    ready = loop.create_future()
                    loop.add_writer(fd, _wake, ready)
                    try:
                        await ready
                    finally:
                        loop.remove_writer(fd)
        except (BrokenPipeError, ConnectionError):
            pass  # it died: how it ended is reported like any other child's end
        finally:
            self.popen.stdin.close()

    async def wait(self) -> int:
        if self.popen.returncode is not None:
            return self.popen.returncode
        try:
            pidfd = os.pidfd_open(self.popen.pid)
        except ProcessLookupError:  # reaped already
            return self.popen.wait()
        except OSError:  # no pidfds on this kernel
            while self.popen.poll() is None:
                await asyncio.sleep(0.02)
            return self.popen.returncode  # type: ignore[return-value]
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        loop.add_reader(pidfd, _wake, exited)
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        return self.popen.wait()


_warm: list[_WarmChild] = []
_warm_lock = threading.Lock()


def _take_warm(size: int) -> _WarmChild:
    """A ready child from the pool (dead or stale ones are discarded), or a new one."""
    taken, stale = None, []
    with _warm_lock:
        while _warm and taken is None:
            child = _warm.pop(0)
            if child.usable():
                taken = child
            else:
                stale.append(child)
        while len(_warm) > size:
            stale.append(_warm.pop())
    for child in stale:
        child.discard()
    return taken or _WarmChild()


def _refill_warm(size: int, preload: str) -> None:
    """Start replacements; they import `preload` (the converter "module:Class" of the job
    that just started: the next one is likely alike) while they wait."""
    try:
        with _warm_lock:
            while len(_warm) < size:
                _warm.append(_WarmChild(preload))
    except OSError:  # out of processes or fds: the next job starts its own child
        log.warning("could not start a warm conversion child", exc_info=True)


def close_warm() -> None:
    """Kill every waiting warm child (at exit, when warm starts are turned off, in tests)."""
    with _warm_lock:
        children = list(_warm)
        _warm.clear()
    for child in children:
        child.discard()


atexit.register(close_warm)


async def _start_cold(workdir: Path) -> tuple[asyncio.subprocess.Process, int]:
    """Today's fresh child, started with the job's cwd and environment; and our message fd."""
    read_fd, write_fd = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-P", "-m", "converters.child", str(write_fd),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=workdir,
            env=_child_env(workdir),
            pass_fds=(write_fd,),
            start_new_session=True,
        )  # fmt: skip
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)  # the child holds its copy; EOF on ours means it is gone
    return proc, read_fd


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
    """Turn how the child ended into an error a user understands."""
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
    names = _stage_inputs([Path(p) for p in inputs], workdir)
    spec = {
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

    loop = asyncio.get_running_loop()
    size = warm_size()
    if size == 0 and _warm:
        close_warm()
    proc: asyncio.subprocess.Process | _WarmChild
    stdout_transport: asyncio.BaseTransport | None = None
    if size:
        proc = _take_warm(size)
        read_fd, proc.read_fd = proc.read_fd, -1
        stdout = asyncio.StreamReader(limit=2**16)
        try:
            assert proc.popen.stdout is not None
            stdout_transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(stdout), proc.popen.stdout
            )
        except BaseException:
            os.close(read_fd)
            proc.discard()
            raise
    else:
        proc, read_fd = await _start_cold(workdir)
        assert proc.stdout is not None
        stdout = proc.stdout

    reader = asyncio.StreamReader(limit=1024 * 1024)
    messages = os.fdopen(read_fd, "rb", buffering=0)
    transport: asyncio.BaseTransport | None = None
    tail = bytearray()
    timed_out = False
    final: dict[str, Any] = {}
    try:
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), messages)
        data = json.dumps(spec).encode()
        if isinstance(proc, _WarmChild):
            await proc.send(data)
            # the replacement starts up while this job runs (once its wall clock is armed)
            loop.call_soon(_refill_warm, size, spec["converter"])
        else:
            assert proc.stdin is not None
            proc.stdin.write(data)
            with contextlib.suppress(ConnectionError):
                await proc.stdin.drain()
            proc.stdin.close()

        async def supervise() -> dict[str, Any]:
            drain = asyncio.ensure_future(_drain(stdout, tail))
            try:
                msg = await _read_messages(reader, on_progress)
                await proc.wait()
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
    finally:
        # On success the group is normally gone already; on timeout, cancellation or any
        # error here, this is what stops a runaway converter and its helpers.
        _kill_group(proc)
        if transport is not None:
            transport.close()
        else:
            messages.close()
        if stdout_transport is not None:
            stdout_transport.close()
        if proc.returncode is None:
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
        if isinstance(proc, _WarmChild):
            proc.close()

    global network_isolated
    if "isolated" in final:
        if network_isolated is not False and not final["isolated"]:
            log.warning("conversions run without network isolation (unshare not permitted)")
        network_isolated = bool(final["isolated"])
    tail_text = tail.decode("utf-8", "replace")
    if timed_out:
        raise SandboxError(
            f"The conversion took longer than {limits.wall_seconds} s and was stopped.",
            "Try a smaller file or lighter options.",
            kind="timeout",
            detail=tail_text,
        )
    result = final.get("result")
    if isinstance(result, dict) and proc.returncode == 0:
        items = result.get("items") or []
        return Result(_result_path(str(result.get("path", "")), workdir), [str(i) for i in items])
    raise _failure(final, proc.returncode, limits, tail_text)

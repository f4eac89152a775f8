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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
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


def _child_env(workdir: Path) -> dict[str, str]:
    """Only what a converter needs: no proxies, credentials or service configuration."""
    # The child must import the same code as we do (tests add their own modules to the path);
    # the job directory itself is never on the path (the child runs with -P).
    paths = [str(_PROJECT_ROOT)] + [p for p in sys.path if p and os.path.isdir(p)]
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(workdir),
        "TMPDIR": str(workdir / "tmp"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
    }


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    # The child leads its own session, so its pid is the process group id of every helper
    # it started (unless one of them called setsid itself).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


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

    reader = asyncio.StreamReader(limit=1024 * 1024)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
    )
    tail = bytearray()
    timed_out = False
    final: dict[str, Any] = {}
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(spec).encode())
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        proc.stdin.close()

        async def supervise() -> dict[str, Any]:
            assert proc.stdout is not None
            drain = asyncio.ensure_future(_drain(proc.stdout, tail))
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
        transport.close()
        if proc.returncode is None:
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())

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

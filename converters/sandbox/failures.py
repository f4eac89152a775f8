"""How a sandboxed conversion failed, in words a user understands (`SandboxError`).

The child reports a converter's own error, a MemoryError or a missing layer on its message
pipe; the kernel reports the rest by how the process ended (a signal from an rlimit, the
seccomp filter or the OOM killer). `failure` turns either into one `SandboxError` whose
`message` and `hint` are for the user and whose `detail` is for the logs only.
"""

from __future__ import annotations

import signal
from typing import Any, Literal

from converters.base import ConversionError, Limits

ErrorKind = Literal["converter", "memory", "cpu", "timeout", "crash", "output_size", "internal"]

_ALLOC_FAILURES = ("memory allocation of", "std::bad_alloc", "Cannot allocate memory",
                   "out of memory")  # fmt: skip


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


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"


def failure(final: dict[str, Any], returncode: int | None, limits: Limits, tail: str) -> SandboxError:
    """Turn how the child ended into an error a user understands.

    `final` is the child's last message, `returncode` its exit code (negative: the signal
    that killed it), `tail` the end of its stdout and stderr. What the child reported comes
    first; else the signal that ended it; else it exited without a word."""
    err = final.get("error")
    if isinstance(err, dict):
        return _reported(err, limits, tail)
    if returncode is not None and returncode < 0:
        return _signalled(-returncode, limits, tail)
    return SandboxError(
        "The conversion failed unexpectedly.",
        "The file may be damaged or use a feature we do not support.",
        kind="internal",
        detail=f"exit code {returncode}\n{tail}",
    )


def _reported(err: dict[str, Any], limits: Limits, tail: str) -> SandboxError:
    """The error the child reported on its message pipe (`child.report_failure`'s kinds)."""
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
        return memory_error(limits, detail)
    if kind == "isolation":
        return SandboxError(
            "This server cannot convert safely: its sandbox is incomplete.",
            "An operator must fix it; `convertd doctor` lists what is missing.",
            kind="internal",
            detail=detail,
        )
    if kind == "output_size":
        return SandboxError(
            f"The output grew larger than {human_bytes(limits.output_bytes)}, the limit for one conversion.",
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


def _signalled(sig: int, limits: Limits, tail: str) -> SandboxError:
    """The child was killed by signal `sig` before it could report (checked in order)."""
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
        return memory_error(limits, tail)
    if sig == signal.SIGABRT and any(m in tail for m in _ALLOC_FAILURES):
        return memory_error(limits, tail)  # Rust and C++ abort when malloc fails
    if sig == signal.SIGXFSZ:
        return SandboxError(
            f"The output grew larger than {human_bytes(limits.output_bytes)}, the limit for one conversion.",
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


def memory_error(limits: Limits, detail: str) -> SandboxError:
    return SandboxError(
        f"The conversion needed more than {human_bytes(limits.memory_bytes)} of memory and was stopped.",
        "Try a smaller file (fewer pixels, pages or rows).",
        kind="memory",
        detail=detail,
    )

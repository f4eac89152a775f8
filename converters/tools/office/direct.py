"""An office job without a sandbox child: the warm instance's jail is its sandbox.

A LibreOffice job through the door (converters/tools/office/broker.py) runs in two
sandboxes one after the other: a sandbox child forked for the job (it checks the package,
strips outside links with the link guard, sends the guarded file through the door, checks
the PDF) and then the instance's jail, where LibreOffice reads the same document. The
child does little but costs a fork, its namespaces and their teardown: about a quarter of
the CPU of a one-page DOCX job, which bounds office throughput on a small machine.

Here the worker hands the stored input to the pool itself, and the instance's agent runs
the same package check and link guard inside the jail before LibreOffice opens the file
(converters/tools/office/agent.py), then reports whether the PDF has a page. That jail
already holds every layer the child had (unprivileged uid, mount, PID and network
namespaces, no_new_privs, seccomp, rlimits, a cgroup) and is the one that parses the
document anyway; it serves one account at a time (CONVERTD_OFFICE_REUSE). The guard still
runs before LibreOffice sees the document, and no byte of the document is parsed in the
worker: it only copies descriptors, as the door does.

Whenever this route does not apply it returns None and the job takes its sandbox child as
before: no door for the job (no pool in this process), several inputs, instances without
the guard (`link_guard` in their layers), or a PDF without a page object (the child's
check then asks a real PDF reader).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import threading
from pathlib import Path

from converters.base import ConversionError, Limits, Result
from converters.sandbox import servers
from converters.sandbox.failures import SandboxError, human_bytes
from converters.tools.office import broker as office_broker
from converters.tools.office import jail as office_jail
from converters.tools.office.instance import Job

_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


async def convert(
    src: Path,
    input_format: str,
    output_format: str,
    filter_options: str,
    workdir: Path,
    limits: Limits,
) -> Result | None:
    """Convert src on the pool behind the job's door; None when the job needs its child.

    Raises SandboxError as a sandboxed job would (the converter's message, a timeout at
    limits.wall_seconds, an output over limits.output_bytes). Long for its one wait and the
    ways it ends (done, timed out, refused, cancelled): each must free the instance and
    leave no partial output behind, and reads best in one place."""
    door = office_broker.serving(workdir)
    layers = door.pool.layers() if door is not None else {}
    if door is None or not layers.get("link_guard"):
        return None
    if servers.strict() and not all(ok for ok, _ in office_jail.describe(door.pool.settings.memory, layers)):
        return None  # CONVERTD_SANDBOX=strict: the child's own layers are checked instead
    request = {"input_format": input_format, "output_format": output_format, "filter_options": filter_options}
    stem = re.sub(r"[^\w .-]+", "_", src.stem).strip(" .") or "document"
    dest = Path(workdir) / f"{stem}.{output_format}"
    job = _open_job(src, dest, request)
    in_fd, out_fd = job.input_fd, job.output_fd
    stop = threading.Event()

    def work() -> int:
        try:
            door.pool.convert(door.account, job, lambda: stop.is_set() or door.closed.is_set())
            return os.fstat(out_fd).st_size
        finally:
            os.close(in_fd)
            os.close(out_fd)

    running = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        size = await asyncio.wait_for(asyncio.shield(running), limits.wall_seconds)
    except TimeoutError:
        stop.set()  # the pool lets the instance go within a fraction of a second
        with contextlib.suppress(ConversionError):
            await running
        dest.unlink(missing_ok=True)
        raise SandboxError(
            f"The conversion took longer than {limits.wall_seconds} s and was stopped.",
            "Try a smaller file or lighter options.",
            kind="timeout",
        ) from None
    except ConversionError as exc:
        dest.unlink(missing_ok=True)
        raise SandboxError(exc.message, exc.hint, kind="converter") from None
    except BaseException:  # cancelled: the job ended elsewhere; the thread winds down alone
        stop.set()
        raise
    if size > limits.output_bytes:
        dest.unlink(missing_ok=True)
        raise SandboxError(
            f"The conversion wrote more than {human_bytes(limits.output_bytes)}, "
            "the limit for one conversion.",
            "Try a smaller file or ask for a smaller output.",
            kind="output_size",
        )
    if job.has_pages is False:
        dest.unlink(missing_ok=True)
        return None  # no page object: the child's check asks a real PDF reader
    return Result(dest)


def _open_job(src: Path, dest: Path, request: dict[str, str]) -> Job:
    """The pool's job: src opened to read, dest created to write, the request checked as
    the door checks a child's (broker.parse_request); the agent guards the input."""
    in_fd = os.open(src, os.O_RDONLY | _FLAGS)
    try:
        out_fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_EXCL | _FLAGS, 0o644)
    except BaseException:
        os.close(in_fd)
        raise
    try:
        job = office_broker.parse_request(json.dumps(request).encode(), [in_fd, out_fd])
    except BaseException:
        os.close(in_fd)
        os.close(out_fd)
        dest.unlink(missing_ok=True)
        raise
    job.guard = True
    return job

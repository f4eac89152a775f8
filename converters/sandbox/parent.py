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

This module is the worker's side of one job (`run`); beside it: `servers` (the fork
servers, by family), `inputs` (staging the inputs), `channels` (what the running job
says), `failures` (SandboxError, and how a child's end reads to a user).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from converters.base import Limits, Result
from converters.registry import normalize_format, registry
from converters.sandbox import channels, servers
from converters.sandbox.failures import SandboxError, failure, human_bytes
from converters.sandbox.inputs import stage_inputs
from converters.sandbox.servers import ZygoteDied

DISK_ENV = "CONVERTD_JOB_DISK_BYTES"  # per-job disk cap; default 2 x output limit + inputs

INLINE_STAGE_BYTES = 256 * 1024  # inputs up to this much are copied on the event loop
last_timings: dict[str, float] = {}
"""Monotonic readings of the last successful job (submitted, forked, isolated, converted,
returned): for `bench/sandbox_latency.py`."""

network_isolated: bool | None = None
"""Whether the last child got its own network namespace (None: none has run yet).

False means the kernel refused (not root, no user namespaces): conversions still run, but
a converter could reach the network; `convertd doctor` should say so."""


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


async def _stage(paths: list[Path], workdir: Path) -> list[str]:
    """`stage_inputs`: copies of large uploads can take seconds, so never on the event loop;
    a few small files copy in the kernel in less time than a thread's round trip takes."""
    if sum(p.stat().st_size for p in paths) <= INLINE_STAGE_BYTES:
        return stage_inputs(paths, workdir)
    return await asyncio.get_running_loop().run_in_executor(None, stage_inputs, paths, workdir)


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
    # an engine that is a full sandbox itself (the warm LibreOffice pool's jail) runs the
    # whole job there, without a child of ours: see converters/tools/office/direct.py
    paths = [Path(p) for p in inputs]
    jailed = await conv.run_jailed(input_format, output_format, options, paths, workdir, limits)
    if jailed is not None:
        return jailed
    (workdir / "tmp").mkdir(exist_ok=True)
    names = await _stage(paths, workdir)
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
            "disk_bytes": _disk_bytes(limits, workdir, names),
        },
        "strict": servers.strict(),
    }
    family = servers.family_of(conv)
    zygote = await _server(family, spec["strict"])
    submitted = time.monotonic()
    ours, msg_r, out_r = await _submit(zygote, family, spec)
    status = channels.Status(ours)
    final, tail, timed_out, lost = await _supervise(status, msg_r, out_r, on_progress, limits.wall_seconds)
    _note(final, submitted)
    return _outcome(final, status, tail.decode("utf-8", "replace"), timed_out, lost, limits, spec, workdir)


def _outcome(
    final: dict[str, Any],
    status: channels.Status,
    tail_text: str,
    timed_out: bool,
    lost: bool,
    limits: Limits,
    spec: dict[str, Any],
    workdir: Path,
) -> Result:
    """The job's Result, or the SandboxError that says why there is none."""
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
            f"The conversion wrote more than {human_bytes(spec['limits']['disk_bytes'])} to disk, "
            "the limit for one conversion.",
            "Try a smaller file or ask for a smaller output.",
            kind="output_size",
            detail=tail_text,
        )
    if isinstance(result, dict) and status.returncode in (0, None):
        items, notes = result.get("items") or [], result.get("notes") or []
        path = _result_path(str(result.get("path", "")), workdir)
        return Result(path, [str(i) for i in items], [str(n)[:300] for n in notes[:100]])
    raise failure(final, status.returncode, limits, tail_text)


def _disk_bytes(limits: Limits, workdir: Path, names: list[str]) -> int:
    """The job's disk cap: CONVERTD_JOB_DISK_BYTES, else twice its output limit plus its inputs."""
    inputs_total = sum((workdir / "in" / name).stat().st_size for name in names)
    disk = os.environ.get(DISK_ENV, "").strip()
    return int(disk) if disk.isdigit() else 2 * limits.output_bytes + inputs_total


async def _server(family: str, strict: bool) -> servers.ForkServer:
    """The family's fork server, or the SandboxError that says why the job cannot start."""
    try:
        zygote = await servers.server(family)
    except (ZygoteDied, OSError) as exc:
        raise SandboxError(
            "The conversion could not start: the sandbox is not available.",
            "Try again; if it keeps failing, the operator should run `convertd doctor`.",
            kind="internal",
            detail=f"starting the fork server failed: {exc}",
        ) from exc
    if strict and zygote.missing:
        raise SandboxError(
            "This server refuses to convert: its sandbox is incomplete.",
            "The operator set CONVERTD_SANDBOX=strict; `convertd doctor` lists what is missing.",
            kind="internal",
            detail="missing sandbox layers: " + ", ".join(zygote.missing),
        )
    return zygote


async def _submit(
    zygote: servers.ForkServer, family: str, spec: dict[str, Any]
) -> tuple[socket.socket, int, int]:
    """Hand the job to the fork server; return our end of its status socket and the read
    ends of its message and output pipes (the caller closes them)."""
    # the spec goes to the job's process alone, in a memfd the fork server passes on unread
    spec_fd = os.memfd_create("convertd-spec", os.MFD_CLOEXEC)
    os.write(spec_fd, json.dumps(spec).encode())
    os.lseek(spec_fd, 0, os.SEEK_SET)
    workdir_fd = os.open(spec["workdir"], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
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
            zygote = await servers.server(family)
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
    return ours, msg_r, out_r


async def _supervise(
    status: channels.Status,
    msg_r: int,
    out_r: int,
    on_progress: Callable[[float], Awaitable[None]] | None,
    wall_seconds: float,
) -> tuple[dict[str, Any], bytearray, bool, bool]:
    """Follow the running job to its end: (final message, output tail, timed out, lost).

    Whatever happens here (timeout, cancellation, any error), its `finally` kills the job
    if it still runs and closes the status socket and both pipes, in that order. Long on
    purpose: what it opens and what its `finally` releases must be read side by side."""
    loop = asyncio.get_running_loop()
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
            drain = asyncio.ensure_future(channels.drain(stdout, tail))
            try:
                msg = await channels.read_messages(reader, on_progress)
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
            final = await asyncio.wait_for(supervise(), timeout=wall_seconds)
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
        status.sock.close()
        for transport in transports:
            transport.close()
        for pipe in (messages, output):
            if len(transports) < 2:
                pipe.close()
    return final, tail, timed_out, lost


def _note(final: dict[str, Any], submitted: float) -> None:
    """Keep what the job's last message says of the sandbox (network isolation, timings)."""
    global network_isolated
    if "isolated" in final:
        network_isolated = bool(final["isolated"])
    if isinstance(final.get("times"), dict):
        last_timings.clear()
        last_timings.update(submitted=submitted, **final["times"], returned=time.monotonic())

"""The job's side of `converters.sandbox.parent`: what runs in the process forked for one job.

`converters.sandbox.forkserver` forks this process ahead of its job (it enters the job-independent
isolation layers while it waits) and calls `run_job` when the job arrives: it resolves the
converter, finishes the isolation (`converters.sandbox.isolation.finish`), enters the job (cwd, HOME
and TMPDIR in its directory), checks the declared input type against the content, then
runs the converter's `check` and `convert`.
Progress and the outcome go to a dedicated pipe as JSON lines, because converter libraries
may write anything to stdout and stderr.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import IO, Any

from converters.base import ConversionError, Task
from converters.tools import fonts


class _Channel:
    """JSON lines to the parent; progress is throttled here so a chatty converter is cheap."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.last_value = 0.0
        self.last_time = 0.0

    def send(self, msg: dict[str, Any]) -> None:
        self.stream.write(json.dumps(msg) + "\n")
        self.stream.flush()

    def progress(self, fraction: float) -> None:
        try:
            value = min(max(float(fraction), 0.0), 1.0)
        except (TypeError, ValueError):
            return
        now = time.monotonic()
        if value <= self.last_value or (now - self.last_time < 0.05 and value < 1.0):
            return
        self.last_value, self.last_time = value, now
        self.send({"progress": value})


def _class(spec: str) -> Any:
    module, _, cls = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in cls.split("."):
        obj = getattr(obj, part)
    return obj


def _load(spec: str) -> Any:
    return _class(spec)()


def _format_of(name: str) -> str | None:
    from converters.registry import normalize_format

    lower = name.lower()
    for ext in ("tar.gz", "tar.bz2", "tar.xz"):
        if lower.endswith("." + ext):
            return ext
    return normalize_format(lower.rsplit(".", 1)[1]) if "." in lower else None


def convert(spec: dict[str, Any], channel: _Channel, converter: Any) -> dict[str, Any]:
    from converters.sniff import check_declared

    workdir = Path(spec["workdir"])
    inputs = [workdir / rel for rel in spec["inputs"]]
    # a converter that never interprets the content (checksums) takes any bytes as declared
    if not converter.content_agnostic:
        for path in inputs:
            # several inputs may mix formats (a png and a jpg into one pdf): each by its name
            own = _format_of(path.name) if len(inputs) > 1 else None
            check_declared(path, own or spec["input_format"])
    task = Task(
        inputs=inputs,
        input_format=spec["input_format"],
        output_format=spec["output_format"],
        options=spec["options"],
        workdir=workdir,
        progress=channel.progress,
    )
    converter.check(task)
    result = converter.convert(task)
    path = Path(result.path)
    if not path.is_absolute():
        path = workdir / path
    return {"path": os.path.relpath(path, workdir), "items": list(result.items), "notes": list(result.notes)}


def job_environment(workdir: Path, isolated: bool) -> dict[str, str]:
    """The whole environment of a job: nothing of the worker's (URLs, keys, proxies)."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "TMPDIR": str(workdir / "tmp"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        **fonts.environment(),  # where the deployment's fonts are (converters.tools.fonts)
    }
    if isolated:
        # LibreOffice and pandoc would wrap themselves in `unshare` again: the job is
        # already in its own namespaces, and seccomp forbids making more
        env["CONVERTD_TOOL_ISOLATION"] = "off"
    return env


def enter_job(workdir: Path, isolated: bool) -> None:
    """Everything about the process that depends on the job, before any input is touched.

    Helpers inherit it through os.environ."""
    os.chdir(workdir)
    env = job_environment(workdir, isolated)  # (it reads what the fork server was given)
    os.environ.clear()
    os.environ.update(env)
    tempfile.tempdir = None  # never a directory cached before the job


def report_failure(channel: _Channel, exc: BaseException, extra: dict[str, Any]) -> None:
    """Tell the parent how the job failed, in the kinds `converters.sandbox.parent` maps to errors."""
    if isinstance(exc, ConversionError):
        error = {
            "kind": "converter",
            "message": exc.message,
            "hint": exc.hint,
            "detail": "".join(traceback.format_exception(exc, limit=-3)),
        }
    elif isinstance(exc, MemoryError):
        error = {"kind": "memory", "detail": "MemoryError"}  # format as little as possible
    else:
        kind = "internal"
        if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
            kind = "output_size"
        elif isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
            kind = "memory"
        error = {"kind": kind, "detail": "".join(traceback.format_exception(exc))}
    channel.send({"error": error, **extra})


def run_job(spec: dict[str, Any], channel: _Channel, prep: Any, started: float) -> int:
    """Resolve the converter, finish the isolation `prep` began, convert; report on the
    channel. Returns the exit code."""
    from converters.sandbox import isolation
    from converters.sandbox.kernel import LayerError

    workdir = Path(spec["workdir"])
    strict = bool(spec.get("strict"))
    try:
        # importing is running the server's own code (a converter a test registered may
        # live outside the tree the job will see): done before isolation, input untouched
        converter = _load(spec["converter"])
        layers = isolation.finish(prep, workdir, spec["limits"], strict=strict, parent=spec.get("parent"))
    except LayerError as exc:
        channel.send({"error": {"kind": "isolation", "layer": exc.layer, "detail": str(exc)}})
        return 2
    except BaseException as exc:
        report_failure(channel, exc, {})
        return 1
    enter_job(workdir, isolated=layers["mount"] and layers["seccomp"])
    isolated = time.monotonic()
    extra = {"layers": layers, "isolated": layers["net"]}
    try:
        result = convert(spec, channel, converter)
    except BaseException as exc:
        report_failure(channel, exc, extra)
        return 1
    # monotonic clock readings (one clock for every process): where a job's time goes
    extra["times"] = {
        **spec.get("spare_times", {}),
        "started": started,
        "isolated": isolated,
        "converted": time.monotonic(),
    }
    channel.send({"result": result, **extra})
    return 0

"""One conversion on the pool: take an instance, stage the job's input in its spool, ask its
agent, copy the output back, and give the instance back (or have it replaced).

The pool (converters/tools/office/pool.py) owns the instances and decides which one a job
gets; this module is what a job does with the one it got, and the errors a user reads.
Blocking code, run in the broker's threads (converters/tools/office/broker.py).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from converters.base import ConversionError
from converters.tools.office import jail as office_jail
from converters.tools.office import soffice as office
from converters.tools.office.instance import (
    OUTPUT_LIMIT,
    Abandoned,
    Instance,
    InstanceDied,
    Job,
    TimedOut,
    copy_fd_to_file,
    copy_file_to_fd,
)

if TYPE_CHECKING:
    from converters.tools.office.pool import Pool

log = logging.getLogger(__name__)


def convert(pool: Pool, account: object, job: Job, abandoned: Callable[[], bool]) -> None:
    """Convert job.input_fd into job.output_fd on a warm instance (blocking).

    Raises ConversionError with a message for the user; an instance that dies
    mid-conversion is replaced and the job tried once more on another."""
    deadline = time.monotonic() + pool.settings.timeout
    for attempt in (1, 2):
        try:
            inst = pool.acquire(account, deadline, abandoned)
        except TimedOut:
            raise _timeout_error(pool.settings.timeout) from None
        except Abandoned:
            raise ConversionError("The job was stopped.") from None
        try:
            _convert_on(pool, inst, account, job, deadline, abandoned)
        except InstanceDied as exc:
            log.warning(
                "LibreOffice instance %s died mid-conversion (attempt %s, %r): %s",
                inst.slot,
                attempt,
                exc,
                inst.stderr_tail()[-500:],
            )
            _finish(pool, inst, "died")  # replaced in the background; the retry takes another
            continue
        except TimedOut:
            _finish(pool, inst, "timeout")
            raise _timeout_error(pool.settings.timeout) from None
        except Abandoned:
            _finish(pool, inst, "abandoned")
            raise ConversionError("The job was stopped.") from None
        except BaseException:  # ConversionError (the document's fault) or ours: a new one
            _finish(pool, inst, "failed")
            raise
        reason = None
        if inst.jobs >= pool.settings.restart_after:
            reason = "restart-after"
        elif inst.rss > pool.settings.recycle_memory:
            reason = "memory"
        _finish(pool, inst, reason)
        return
    raise ConversionError(
        "LibreOffice stopped unexpectedly twice while converting this document.",
        hint="The file may be damaged, too large for the memory limit, or crafted to crash LibreOffice.",
    )


def _finish(pool: Pool, inst: Instance, reason: str | None) -> None:
    # the job's input and output never outlive it in the spool
    for sub in ("in", "out"):
        shutil.rmtree(inst.spool / "job" / sub, ignore_errors=True)
    pool.release(inst, reason)


def _convert_on(
    pool: Pool, inst: Instance, account: object, job: Job, deadline: float, abandoned: Callable[[], bool]
) -> None:
    jobdir = inst.spool / "job"
    in_dir, out_dir = jobdir / "in", jobdir / "out"
    for d in (in_dir, out_dir):
        d.mkdir(mode=0o700)
        office_jail.give(d, inst.slot)
    with pool.lock:
        pool.history.append((account, inst.slot, inst.generation, inst.proc.pid if inst.proc else 0))
        del pool.history[:-1000]
    staged = in_dir / f"document.{job.input_format}"
    copy_fd_to_file(job.input_fd, staged, None)
    office_jail.give(staged, inst.slot)
    reply = inst.request(
        {
            "op": "convert",
            "input": f"/spool/job/in/{staged.name}",
            "output": f"/spool/job/out/document.{job.output_format}",
            "import_filter": job.import_filter,
            "import_options": job.import_options,
            "export_filter": job.export_filter,
            "export_options": job.export_options,
            "filter_data": job.filter_data,
        },
        deadline,
        abandoned,
    )
    inst.jobs += 1
    with pool.lock:
        pool.conversions += 1
    inst.rss = int(reply.get("rss") or 0)
    if not reply.get("ok"):
        if reply.get("alive") is False:
            log.warning("LibreOffice instance %s: %s", inst.slot, reply.get("error"))
            raise InstanceDied
        raise _failed(job, str(reply.get("error") or ""))
    out = office._find_output(out_dir, job.output_format)
    if out is None:
        raise _failed(job, "")
    copy_file_to_fd(out, job.output_fd, OUTPUT_LIMIT)


def _timeout_error(timeout: float) -> ConversionError:
    return ConversionError(
        f"LibreOffice took longer than {timeout:g} seconds and was stopped.",
        hint="The document may be very large or built to hang the converter.",
    )


def _failed(job: Job, detail: str) -> ConversionError:
    detail = detail.split(" at ./")[0][:300]
    return ConversionError(
        f"LibreOffice could not convert this {job.input_format} file to {job.output_format}.",
        hint=(
            f"The file may be damaged, password-protected or not really {job.input_format}."
            + (f" LibreOffice said: {detail}" if detail else "")
        ),
    )

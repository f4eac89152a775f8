"""One conversion on the pool: take an instance, stage the job's input in its spool, ask its
agent, copy the output back, and give the instance back (or have it replaced).

The pool (converters/tools/office/pool.py) owns the instances and decides which one a job
gets; this module is what a job does with the one it got, and the errors a user reads.
Blocking code, run in the broker's threads (converters/tools/office/broker.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from converters.base import ConversionError
from converters.tools.office import jail as office_jail
from converters.tools.office.instance import OUTPUT_LIMIT, Abandoned, Instance, InstanceDied, Job, TimedOut

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
    # the job's input and output never outlive it in the spool (its folders are kept for
    # the next job: making and removing folders costs milliseconds on some disks)
    with contextlib.suppress(OSError), _JobDirs(inst) as dirs:
        dirs.empty()
    pool.release(inst, reason)


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _JobDirs:
    """The instance's spool/job/in and spool/job/out, opened as folders, never through links.

    The jail's uid owns spool/ and may change anything in it at any moment, so the worker
    (root) never walks a path through it: each folder is opened relative to its parent's
    descriptor with O_NOFOLLOW, and each file relative to its folder's, so a folder the jail
    swapped for a link fails the job (OSError) instead of leading the worker elsewhere."""

    def __init__(self, inst: Instance) -> None:
        self.slot = inst.slot
        self.fds: list[int] = []
        try:
            # spool/ itself lies in the pool's root-owned folder: the jail cannot swap it
            spool = self._open(os.open(inst.spool, _DIR))
            job = self._open(os.open("job", _DIR, dir_fd=spool))
            self.input, self.output = self._subdir(job, "in"), self._subdir(job, "out")
        except BaseException:
            self.close()
            raise

    def _open(self, fd: int) -> int:
        self.fds.append(fd)
        return fd

    def _subdir(self, parent: int, name: str) -> int:
        try:
            return self._open(os.open(name, _DIR, dir_fd=parent))
        except FileNotFoundError:
            os.mkdir(name, 0o700, dir_fd=parent)
        fd = self._open(os.open(name, _DIR, dir_fd=parent))
        self.give(fd)
        return fd

    def give(self, fd: int) -> None:
        """Hand a file or folder we made to the instance's uid."""
        if office_jail.as_root():
            uid = office_jail.uid_base() + self.slot
            os.fchown(fd, uid, uid)

    def stage(self, src_fd: int, name: str) -> None:
        """The job's input (the child's descriptor) as in/name, for the instance to read."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=self.input)
        try:
            self.give(fd)
            os.lseek(src_fd, 0, os.SEEK_SET)
            while chunk := os.read(src_fd, 1024 * 1024):
                _write_all(fd, chunk)
        finally:
            os.close(fd)

    def copy_output(self, output_format: str, dest_fd: int) -> bool:
        """Copy what LibreOffice wrote in out/ to dest_fd; False when it wrote nothing."""
        # the CSV export of one chosen sheet appends the sheet name: document-Sheet1.csv
        for name in sorted(n for n in os.listdir(self.output) if n.endswith(f".{output_format}")):
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.output)
            except OSError:
                continue  # a link or a vanished file: not an output
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    continue
                if info.st_size == 0 and output_format != "csv":
                    return False
                if info.st_size > OUTPUT_LIMIT:
                    raise ConversionError("The output grew larger than the limit for one conversion.")
                os.ftruncate(dest_fd, 0)
                os.lseek(dest_fd, 0, os.SEEK_SET)
                while chunk := os.read(fd, 1024 * 1024):
                    _write_all(dest_fd, chunk)
                return True
            finally:
                os.close(fd)
        return False

    def empty(self) -> None:
        for folder in (self.input, self.output):
            for entry in os.scandir(folder):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.name, ignore_errors=True, dir_fd=folder)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.name, dir_fd=folder)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()

    def __enter__(self) -> _JobDirs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _convert_on(
    pool: Pool, inst: Instance, account: object, job: Job, deadline: float, abandoned: Callable[[], bool]
) -> None:
    with pool.lock:
        pool.history.append((account, inst.slot, inst.generation, inst.proc.pid if inst.proc else 0))
        del pool.history[:-1000]
    try:
        dirs = _JobDirs(inst)
    except OSError as exc:  # the jail changed its spool under us: not an instance to keep
        raise InstanceDied(f"its spool: {exc}") from None
    with dirs:
        dirs.empty()  # (a failed clean-up after the last job, or anything the jail left)
        staged = f"document.{job.input_format}"
        dirs.stage(job.input_fd, staged)
        reply = inst.request(
            {
                "op": "convert",
                "input": f"/spool/job/in/{staged}",
                "output": f"/spool/job/out/document.{job.output_format}",
                "import_filter": job.import_filter,
                "import_options": job.import_options,
                "export_filter": job.export_filter,
                "export_options": job.export_options,
                "filter_data": job.filter_data,
                "guard": job.input_format if job.guard else None,
                "check_pdf": job.guard and job.output_format == "pdf",
            },
            deadline,
            abandoned,
        )
        if reply.get("refused"):  # the link guard's verdict: LibreOffice never saw the file
            raise ConversionError(str(reply["refused"]), reply.get("hint") or None)
        inst.jobs += 1
        with pool.lock:
            pool.conversions += 1
        inst.rss = int(reply.get("rss") or 0)
        if not reply.get("ok"):
            if reply.get("alive") is False:
                log.warning("LibreOffice instance %s: %s", inst.slot, reply.get("error"))
                raise InstanceDied
            raise _failed(job, str(reply.get("error") or ""))
        if not dirs.copy_output(job.output_format, job.output_fd):
            raise _failed(job, "")
        if "pages" in reply:
            job.has_pages = bool(reply["pages"])


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

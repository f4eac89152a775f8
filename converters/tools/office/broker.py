"""The one-job door between a sandbox child and the worker's LibreOffice pool.

For each job the worker opens a Unix socket in the job's own directory (the only place
the job's sandbox child can see) and closes it when the job ends. The child's converter
connects, sends its request and two open files (the guarded input, readable; the output
it created, writable) as SCM_RIGHTS, and waits for the answer. The worker never opens a
path the child names: it reads and writes only the descriptors it was given, so a link
planted in the job directory leads nowhere.

The worker, not the child, knows the job's account: it is bound to the socket when the
job starts. A child can therefore only ever reach an instance chosen for its own
account, and never an instance's UNO pipe, which lives inside that instance's jail.

The child's side (find the door, send the request) is converters/tools/office/door.py, which a
job imports without this module and the pool behind it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import select
import socket
import stat
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from converters.base import ConversionError
from converters.tools.office import pool as office_pool
from converters.tools.office import soffice as office
from converters.tools.office.door import SOCKET_NAME, convert, find
from converters.tools.office.door import address as _address
from converters.tools.office.instance import Job

__all__ = ["SOCKET_NAME", "JobBroker", "convert", "find", "serve_job"]  # the door's job side too

log = logging.getLogger(__name__)

_MAX_REQUEST = 64 * 1024
_PAGE_RANGE = re.compile(r"^\s*\d+\s*(-\s*\d*\s*)?(,\s*\d+\s*(-\s*\d*\s*)?)*$")
_CSV_OPTIONS = re.compile(r"^\d{1,3},34,76,1,,0,false,true,true,false,false,\d{1,5}$")


# ------------------------------------------------------------------------ worker side

_open: dict[Path, JobBroker] = {}  # job directory -> its open door (this process's)
_open_lock = threading.Lock()


def serving(workdir: Path) -> JobBroker | None:
    """The door this process opened for the job in workdir (it knows the job's account)."""
    with _open_lock:
        return _open.get(Path(workdir).absolute())


class JobBroker:
    """Serves one job's office requests on `workdir/SOCKET_NAME` until closed."""

    def __init__(self, pool: office_pool.Pool, workdir: Path, account: object) -> None:
        self.pool = pool
        self.account = account
        self.path = Path(workdir).absolute() / SOCKET_NAME
        self.closed = threading.Event()
        self.threads: list[threading.Thread] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address, dirfd = _address(self.path)
        try:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.sock.bind(address)
            # only the job directory's owner (the job's child) may connect
            os.chmod(self.path, 0o600)
            owner = os.stat(self.path.parent)
            if os.geteuid() == 0 and owner.st_uid != 0:
                os.chown(self.path, owner.st_uid, owner.st_gid)
            self.sock.listen(4)
            self.sock.settimeout(0.2)
        except BaseException:
            self.sock.close()
            raise
        finally:
            if dirfd is not None:
                os.close(dirfd)
        self.acceptor = threading.Thread(target=self._accept, name="office-broker", daemon=True)
        self.acceptor.start()
        with _open_lock:
            _open[self.path.parent] = self

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), name="office-job", daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        fds: list[int] = []
        with conn:
            conn.settimeout(30)  # for the request itself; the conversion has its own clock
            try:
                data, fds, _flags, _addr = socket.recv_fds(conn, _MAX_REQUEST, 2)
                job = parse_request(data, fds)

                def abandoned() -> bool:
                    return self.closed.is_set() or _peer_gone(conn)

                self.pool.convert(self.account, job, abandoned)
                reply: dict[str, Any] = {"ok": True}
            except ConversionError as exc:
                reply = {"ok": False, "message": exc.message, "hint": exc.hint}
            except Exception:
                log.exception("office broker failed")
                reply = {"ok": False, "message": "The conversion failed unexpectedly."}
            finally:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            with contextlib.suppress(OSError):
                conn.sendall((json.dumps(reply) + "\n").encode())

    def close(self) -> None:
        with _open_lock:
            if _open.get(self.path.parent) is self:
                del _open[self.path.parent]
        self.closed.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in the acceptor
        self.sock.close()
        self.acceptor.join(5)
        for thread in self.threads:
            thread.join(30)  # a running conversion notices `closed` within 0.2 s
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


@contextlib.asynccontextmanager
async def serve_job(
    workdir: Path, account: object, pool: office_pool.Pool | None = None
) -> AsyncIterator[None]:
    """Open the job's door to the pool (this process's, unless given) while the block runs;
    a no-op without a pool."""
    import asyncio

    pool = pool or office_pool.current()
    if pool is None:
        yield
        return
    broker = JobBroker(pool, workdir, account)
    try:
        yield
    finally:
        await asyncio.to_thread(broker.close)


def _peer_gone(conn: socket.socket) -> bool:
    # the child sends nothing after its request: readable means it hung up
    poller = select.poll()
    poller.register(conn, select.POLLIN | select.POLLHUP)
    if not poller.poll(0):
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def parse_request(data: bytes, fds: list[int]) -> Job:
    """Check everything the (untrusted) child sent; build the job the pool runs."""
    bad = ConversionError("The conversion failed unexpectedly.", hint="Bad request to LibreOffice.")
    try:
        req = json.loads(data)
    except ValueError:
        raise bad from None
    if not isinstance(req, dict) or len(fds) != 2:
        raise bad
    in_fd, out_fd = fds
    if not stat.S_ISREG(os.fstat(in_fd).st_mode) or not stat.S_ISREG(os.fstat(out_fd).st_mode):
        raise bad
    if fcntl.fcntl(out_fd, fcntl.F_GETFL) & os.O_ACCMODE not in (os.O_WRONLY, os.O_RDWR):
        raise bad
    src, dst = str(req.get("input_format")), str(req.get("output_format"))
    if src not in office.IMPORT_FILTERS:
        raise bad
    export = office.EXPORT_FILTERS[office.APP_OF[src]].get(dst)
    if export is None or src == dst:
        raise ConversionError(f"LibreOffice cannot write {dst} from {src}.")
    import_filter, _, import_options = office.IMPORT_FILTERS[src].partition(":")
    export_filter, _, export_options = export.partition(":")
    options = str(req.get("filter_options") or "")
    filter_data: dict[str, tuple[str, Any]] = {}
    if options and dst == "pdf":
        filter_data = _pdf_options(options, bad)
    elif options and dst == "csv":
        if not _CSV_OPTIONS.match(options):
            raise bad
        export_options = options
    elif options:
        raise bad
    return Job(
        input_fd=in_fd,
        output_fd=out_fd,
        input_format=src,
        output_format=dst,
        import_filter=import_filter,
        import_options=import_options,
        export_filter=export_filter,
        export_options=export_options,
        filter_data=filter_data,
    )


def _pdf_options(options: str, bad: ConversionError) -> dict[str, tuple[str, Any]]:
    """office.pdf_filter_options' JSON, limited to what it can hold."""
    try:
        parsed = json.loads(options)
    except ValueError:
        raise bad from None
    if not isinstance(parsed, dict):
        raise bad
    out: dict[str, tuple[str, Any]] = {}
    for name, spec in parsed.items():
        value = spec.get("value") if isinstance(spec, dict) else None
        if name == "PageRange" and isinstance(value, str) and _PAGE_RANGE.match(value):
            out[name] = ("string", value)
        elif name == "SelectPdfVersion" and str(value) in ("0", "1", "2", "3"):
            out[name] = ("long", int(str(value)))
        else:
            raise bad
    return out

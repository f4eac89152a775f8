"""The job's side of the door to the worker's LibreOffice pool (see converters/tools/office/broker.py).

A sandbox child imports this module, never the pool's: the fork server preloads it with
converters.tools.office.soffice, so a job pays no import of the pool's machinery (threads, futures,
jails) for code that only the worker runs. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
from pathlib import Path

from converters.base import ConversionError

SOCKET_NAME = ".convertd-office.sock"


def address(path: Path) -> tuple[str, int | None]:
    """A path short enough for sun_path (108 bytes): through /proc/self/fd when needed."""
    if len(os.fsencode(path)) < 100:
        return str(path), None
    dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    return f"/proc/self/fd/{dirfd}/{path.name}", dirfd


def find(workdir: Path) -> Path | None:
    """The job's door, when the worker opened one (a pool is running)."""
    path = Path(workdir) / SOCKET_NAME
    try:
        return path if stat.S_ISSOCK(os.lstat(path).st_mode) else None
    except OSError:
        return None


def convert(
    door: Path, src: Path, input_format: str, output_format: str, filter_options: str, dest: Path
) -> None:
    """Ask the worker's pool to convert src into dest (created here). Raises ConversionError."""
    in_fd = os.open(src, os.O_RDONLY)
    try:
        out_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except BaseException:
        os.close(in_fd)
        raise
    path, dirfd = address(door)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            request = {
                "input_format": input_format,
                "output_format": output_format,
                "filter_options": filter_options,
            }
            socket.send_fds(sock, [json.dumps(request).encode()], [in_fd, out_fd])
            os.close(in_fd)
            os.close(out_fd)
            in_fd = out_fd = -1
            reply = sock.makefile("rb").readline()  # the sandbox's wall clock bounds this wait
    finally:
        for fd in (in_fd, out_fd, dirfd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
    try:
        answer = json.loads(reply)
    except ValueError:
        answer = {}
    if not isinstance(answer, dict) or not answer.get("ok"):
        dest.unlink(missing_ok=True)
        message = str(answer.get("message") or "") if isinstance(answer, dict) else ""
        hint = answer.get("hint") if isinstance(answer, dict) else None
        raise ConversionError(message or "LibreOffice stopped answering.", hint or None)

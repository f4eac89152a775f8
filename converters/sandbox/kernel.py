"""The system calls the isolation makes, through libc: namespaces, mounts, capabilities.

Thin wrappers that raise `LayerError` (naming the layer that could not be entered) where
libc returns an error; the constants are Linux's (x86_64 for the raw syscall numbers).
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS = 38
SYS_PIVOT_ROOT = 155  # x86_64
SYS_SETNS = 308

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.syscall.restype = ctypes.c_long


class LayerError(OSError):
    """A layer could not be entered; `layer` names it."""

    def __init__(self, layer: str, what: str, err: int = 0) -> None:
        super().__init__(err, f"{layer}: {what}: {os.strerror(err) if err else 'failed'}")
        self.layer = layer


def check(layer: str, what: str, rc: int) -> None:
    if rc != 0:
        raise LayerError(layer, what, ctypes.get_errno())


def unshare(flags: int) -> None:
    check("namespaces", f"unshare({flags:#x})", libc.unshare(flags))


def setns(fd: int, nstype: int) -> None:
    check("namespaces", "setns", libc.setns(fd, nstype))


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [s.encode() if s is not None else None for s in (source, target, fstype)]
    rc = libc.mount(enc[0], enc[1], enc[2], flags, data.encode() if data else None)
    check("mount", f"mount {source} on {target}", rc)


def mount_b(
    source: bytes | None, target: bytes, fstype: bytes | None, flags: int, data: bytes | None
) -> None:
    """`mount` with paths already encoded (the skeleton's planned steps)."""
    if libc.mount(source, target, fstype, flags, data) != 0:
        err = ctypes.get_errno()
        raise LayerError("mount", f"mount {source!r} on {target!r}", err)


def drop_capabilities() -> None:
    # capset(version 3, all sets empty): the job keeps no capability, in any namespace
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    check("uid", "capset", libc.capset(header, data))

"""A job's heap, made ready while its process waits for the job (`prefault`).

A job's process is forked fresh, so every page its converter allocates is new to it: the
kernel zeroes and maps each one on first touch, about 2,000 page faults (5-8 ms of CPU)
for a 0.3 MP image, on the job's critical path. A spare (`converters.sandbox.spares`)
waits idle anyway: it asks the kernel for a block of heap at once (huge pages where
transparent huge pages are allowed, one system call), gives it back to malloc and keeps
it, so the converter's buffers land on pages that are already there.
"""

from __future__ import annotations

import ctypes
import functools

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit
MADV_HUGEPAGE = 14
MADV_POPULATE_WRITE = 23  # Linux 5.14
HUGE_PAGE = 2 << 20
PAGE = 4096


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


def prefault(nbytes: int) -> bool:
    """Map `nbytes` of malloc's heap now; whether the pages are there (False: nothing done,
    or the kernel would not populate them, and the job faults them in as usual)."""
    if nbytes <= 0:
        return False
    try:
        libc = _libc()
    except OSError:
        return False
    # buffers up to 32 MB come from this heap rather than from fresh mmaps of their own,
    # and what the converter frees stays mapped for its next buffer (the process is
    # short-lived: its memory goes back at exit)
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    block = libc.malloc(nbytes)
    if not block:
        return False
    try:
        start = (block + PAGE - 1) & ~(PAGE - 1)
        end = (block + nbytes) & ~(PAGE - 1)
        huge_start = (block + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
        huge_end = (block + nbytes) & ~(HUGE_PAGE - 1)
        if huge_end > huge_start:  # refused where THP is off: 4 KiB pages then
            libc.madvise(huge_start, huge_end - huge_start, MADV_HUGEPAGE)
        return bool(libc.madvise(start, end - start, MADV_POPULATE_WRITE) == 0)
    finally:
        libc.free(block)

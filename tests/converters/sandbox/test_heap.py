"""A spare's heap is mapped while it waits (`converters.sandbox.heap`): the job's buffers
then cost no page faults on its critical path."""

from __future__ import annotations

import ctypes
import os
import resource

import pytest

from converters.sandbox import heap


def _faults_of_a_job(prefault_bytes: int) -> tuple[bool, int]:
    """In a fresh child, as a spare: prefault, then allocate and fill 8 MB in 1 MB
    buffers the way a decoder does; whether the prefault held, and the job's faults."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            libc = ctypes.CDLL(None)
            libc.malloc.restype = ctypes.c_void_p
            libc.malloc.argtypes = [ctypes.c_size_t]
            held = heap.prefault(prefault_bytes)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(8):
                block = libc.malloc(1 << 20)
                ctypes.memset(block, 7, 1 << 20)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
            os.write(write_fd, f"{int(held)} {faults}".encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        held, faults = fh.read().split()
    os.waitpid(pid, 0)
    return held == "1", int(faults)


def test_a_prefaulted_heap_spares_the_job_its_page_faults() -> None:
    held, with_heap = _faults_of_a_job(16 << 20)
    if not held:
        pytest.skip("this kernel cannot populate memory ahead (MADV_POPULATE_WRITE: Linux 5.14)")
    _, without = _faults_of_a_job(0)
    assert without >= 1500  # 8 MB in 4 KiB pages, faulted in one by one
    assert with_heap < without / 5, (with_heap, without)


def test_nothing_is_mapped_for_a_family_without_a_heap() -> None:
    assert heap.prefault(0) is False

"""A spare's heap is mapped while it waits (`converters.sandbox.heap`): the job's buffers
then cost no page faults on its critical path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from converters.sandbox import heap

ROOT = Path(__file__).resolve().parents[3]


_JOB = """
import ctypes, resource, sys
from converters.sandbox import heap
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
held = heap.prefault(int(sys.argv[1]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    block = libc.malloc(1 << 20)
    ctypes.memset(block, 7, 1 << 20)
print(int(held), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_of_a_job(prefault_bytes: int) -> tuple[bool, int]:
    """In a fresh interpreter, as a spare: prefault, then allocate and fill 8 MB in 1 MB
    buffers the way a decoder does; whether the prefault held, and the job's faults.

    (Not a fork of this test process: its heap holds freed memory of its own, which the
    child's buffers would reuse, faulting copy-on-write pages the prefault never mapped.)"""
    out = subprocess.run(
        [sys.executable, "-c", _JOB, str(prefault_bytes)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return out[0] == "1", int(out[1])


def test_a_prefaulted_heap_spares_the_job_its_page_faults() -> None:
    held, with_heap = _faults_of_a_job(16 << 20)
    if not held:
        pytest.skip("this kernel cannot populate memory ahead (MADV_POPULATE_WRITE: Linux 5.14)")
    _, without = _faults_of_a_job(0)
    assert without >= 1500  # 8 MB in 4 KiB pages, faulted in one by one
    assert with_heap < without / 5, (with_heap, without)


def test_nothing_is_mapped_for_a_family_without_a_heap() -> None:
    assert heap.prefault(0) is False

"""Waiting for something to become true, instead of sleeping a fixed time and hoping.

A fixed sleep before an assertion either fails on a slow machine or passes without having
checked anything; these poll a condition until it holds, and fail with a message naming
what never happened when the time is up.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

INTERVAL = 0.05


async def wait_until(
    predicate: Callable[[], T | Awaitable[T]], timeout: float = 30, what: str = "the condition"
) -> T:
    """Poll `predicate` (plain or async) until it returns something truthy; return that.

    Raises AssertionError naming `what` when `timeout` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]  # an awaitable predicate's result is T
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still not true after {timeout} s")
        await asyncio.sleep(INTERVAL)


def wait_until_sync(predicate: Callable[[], T], timeout: float = 30, what: str = "the condition") -> T:
    """`wait_until` for plain (non-async) tests and helper threads."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still not true after {timeout} s")
        time.sleep(INTERVAL)

"""Waiting for a condition instead of for time: ``until`` polls what the code exposes
(a counter, a state) and fails the test only if it never holds (a hang guard)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

YIELDS = 20  # turns of the event loop before polling every 10 ms
HANG_GUARD = 30.0  # seconds: a failure bound, never what a test waits for


async def until(condition: Callable[[], bool], hang_guard: float = HANG_GUARD) -> None:
    """Return once ``condition()`` holds; fail after ``hang_guard`` seconds.

    It is checked first after each of a few turns of the event loop (so a state that
    other tasks reach at their next step, such as "every append is queued", is seen
    before the writer moves on), then every 10 ms."""
    for turn in range(YIELDS + int(hang_guard * 100)):
        await asyncio.sleep(0 if turn < YIELDS else 0.01)
        if condition():
            return
    raise AssertionError(f"the condition did not hold within {hang_guard:g} s")


async def eventually(
    condition: Callable[[], Awaitable[bool]], hang_guard: float = HANG_GUARD
) -> None:
    """``until`` for a condition that must be awaited (e.g. one that reads the store),
    checked every 10 ms."""
    for _ in range(int(hang_guard * 100)):
        if await condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the condition did not hold within {hang_guard:g} s")

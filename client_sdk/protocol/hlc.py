"""Hybrid logical clock: ``(unix_ms << 16) | counter`` stamps (PROTOCOL.md section 1).

The arithmetic lives in two pure functions so that the SQLite triggers, which
compute stamps in SQL, can be checked against the very same rules. Where the
last stamp is kept is pluggable (:class:`ClockState`): in memory for a plain
engine, in the database's one-row clock table for a SQLite node, so triggers
and engine share one monotonic clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from ..errors import ClockOverflowError, InvalidParameterError

COUNTER_BITS = 16
COUNTER_MAX = (1 << COUNTER_BITS) - 1
HLC_MAX = (1 << 63) - 1
"""Largest stamp we accept: it must fit a signed 64-bit SQLite INTEGER."""


class CounterExhausted(Exception):
    """Internal signal: the counter would pass 0xFFFF at this wall time."""


def wall_of(stamp: int) -> int:
    return stamp >> COUNTER_BITS


def counter_of(stamp: int) -> int:
    return stamp & COUNTER_MAX


def next_stamp(last: int, physical_ms: int) -> int:
    """The stamp ``now()`` issues after ``last`` when the wall clock reads ``physical_ms``."""
    if physical_ms > wall_of(last):
        return physical_ms << COUNTER_BITS
    if counter_of(last) == COUNTER_MAX:
        raise CounterExhausted
    return last + 1


def receive_stamp(last: int, remote: int, physical_ms: int) -> int:
    """The stamp ``receive(remote)`` issues: greater than both ``last`` and ``remote``."""
    wall = max(physical_ms, wall_of(last), wall_of(remote))
    counters = [counter_of(s) for s in (last, remote) if wall_of(s) == wall]
    if not counters:
        return wall << COUNTER_BITS
    counter = max(counters) + 1
    if counter > COUNTER_MAX:
        raise CounterExhausted
    return (wall << COUNTER_BITS) | counter


class ClockState(Protocol):
    """Where a clock keeps its last stamp.

    ``advance(step)`` must atomically read the last stamp, store ``step(last)``
    and return it; if ``step`` raises, nothing is stored.
    """

    def advance(self, step: Callable[[int], int]) -> int: ...

    def read(self) -> int: ...


class MemoryClockState:
    """A clock state held in this process, safe across threads."""

    def __init__(self, last: int = 0) -> None:
        self._last = last
        self._lock = threading.Lock()

    def advance(self, step: Callable[[int], int]) -> int:
        with self._lock:
            self._last = step(self._last)
            return self._last

    def read(self) -> int:
        return self._last


def system_ms() -> int:
    return time.time_ns() // 1_000_000


class HybridLogicalClock:
    """A node's HLC. ``now()`` is strictly increasing, whatever the wall clock does."""

    def __init__(
        self,
        state: ClockState | None = None,
        *,
        wall_ms: Callable[[], int] = system_ms,
        overflow_retries: int = 50,
    ) -> None:
        if overflow_retries < 0:
            raise InvalidParameterError("overflow_retries must be >= 0")
        self.state: ClockState = state if state is not None else MemoryClockState()
        self._wall_ms = wall_ms
        self._overflow_retries = overflow_retries

    def wall_ms(self) -> int:
        """The physical clock this HLC reads (unix milliseconds)."""
        return self._wall_ms()

    @property
    def last(self) -> int:
        """The last stamp issued (or received)."""
        return self.state.read()

    def now(self) -> int:
        return self._advance(lambda last: next_stamp(last, self._wall_ms()))

    def receive(self, remote: int) -> int:
        if isinstance(remote, bool) or not isinstance(remote, int) or not 0 <= remote <= HLC_MAX:
            raise InvalidParameterError(f"remote stamp must be an integer in [0, 2**63), got {remote!r}")
        return self._advance(lambda last: receive_stamp(last, remote, self._wall_ms()))

    def _advance(self, step: Callable[[int], int]) -> int:
        for _ in range(self._overflow_retries + 1):
            try:
                return self.state.advance(step)
            except CounterExhausted:
                time.sleep(0.001)
        raise ClockOverflowError(
            f"HLC counter exhausted ({COUNTER_MAX + 1} stamps in one millisecond) and the wall clock did not move"
        )

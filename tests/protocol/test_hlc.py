"""HLC: strictly increasing per node, whatever the wall clock does; receive moves past both sides."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client_sdk import ClockOverflowError, HybridLogicalClock, InvalidParameterError
from client_sdk.protocol.hlc import COUNTER_MAX, MemoryClockState, receive_stamp


class JumpingWall:
    """A wall clock that jumps back a minute every 100 reads, from any thread."""

    def __init__(self) -> None:
        self.reads = 0
        self.ms = 1_795_000_000_000
        self.lock = threading.Lock()

    def __call__(self) -> int:
        with self.lock:
            self.reads += 1
            self.ms += -60_000 if self.reads % 100 == 0 else 1
            return self.ms


def test_strictly_increasing_under_eight_threads_and_a_wall_clock_going_backwards() -> None:
    clock = HybridLogicalClock(wall_ms=JumpingWall())
    per_thread: list[list[int]] = [[] for _ in range(8)]

    def work(out: list[int]) -> None:
        for i in range(2_000):
            out.append(clock.now() if i % 5 else clock.receive(out[-1] + 3 if out else 0))

    threads = [threading.Thread(target=work, args=(out,)) for out in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [stamp for out in per_thread for stamp in out]
    assert len(set(everything)) == len(everything)  # unique across threads
    for out in per_thread:
        assert all(a < b for a, b in zip(out, out[1:], strict=False))  # increasing within each thread


def test_now_uses_the_wall_clock_when_it_moves_forward() -> None:
    clock = HybridLogicalClock(wall_ms=lambda: 1000)
    assert clock.now() == 1000 << 16
    assert clock.now() == (1000 << 16) + 1


@given(last=st.integers(0, 2**62), remote=st.integers(0, 2**62), physical=st.integers(0, 2**46))
def test_receive_is_past_both_sides(last: int, remote: int, physical: int) -> None:
    try:
        stamp = receive_stamp(last, remote, physical)
    except Exception:
        assert max(last, remote) & COUNTER_MAX == COUNTER_MAX
        return
    assert stamp > last and stamp > remote and stamp >> 16 >= physical


def test_counter_overflow_waits_then_raises() -> None:
    clock = HybridLogicalClock(MemoryClockState((5 << 16) | COUNTER_MAX), wall_ms=lambda: 5, overflow_retries=2)
    with pytest.raises(ClockOverflowError):
        clock.now()
    moving = iter(range(5, 100))
    clock = HybridLogicalClock(MemoryClockState((5 << 16) | COUNTER_MAX), wall_ms=lambda: next(moving))
    assert clock.now() == 6 << 16


def test_bad_remote_stamps_are_refused() -> None:
    clock = HybridLogicalClock()
    for bad in (-1, True, 2**63, "12"):
        with pytest.raises(InvalidParameterError):
            clock.receive(bad)  # type: ignore[arg-type]

"""The engine's tuning knobs, checked once (``DatabaseEngine`` takes them as keyword arguments)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeGuard

from ..errors import require
from ..protocol.limits import MiB


@dataclass(frozen=True)
class EngineOptions:
    """Page sizes, payload limits, the clock-drift limit and the round cap of one engine."""

    batch_bytes: int | None = 16 * MiB
    """A page's size in bytes of wire JSON (PROTOCOL.md 7.3); the first record always fits."""
    batch_size: int | None = None
    """A page's size in records, pushed or served."""
    clock_drift_max: int | None = 300
    """Seconds a peer's wall clock may be off from ours (PROTOCOL.md 6); None: no check."""
    identity_field: str = "id"
    payload_bytes_max: int | None = None
    """Refuse to push a manifest whose records take more bytes (PROTOCOL.md 11.1)."""
    payload_records_max: int | None = None
    """Refuse to push a manifest with more records and tombstones."""
    max_rounds: int = 10_000
    """A sync that has not settled after this many rounds is aborted (a runaway server)."""

    def __post_init__(self) -> None:
        for name in ("batch_bytes", "batch_size", "payload_bytes_max", "payload_records_max"):
            require(positive_or_none(getattr(self, name)), f"{name} must be a positive integer or None")
        require(self.clock_drift_max is None or (is_int(self.clock_drift_max) and self.clock_drift_max >= 0),
                "clock_drift_max must be a non-negative integer (seconds) or None")
        require(isinstance(self.identity_field, str) and bool(self.identity_field),
                "identity_field must be a non-empty string")
        require(is_int(self.max_rounds) and self.max_rounds > 0, "max_rounds must be a positive integer")


def is_int(value: object) -> TypeGuard[int]:
    """An integer, and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def positive_or_none(value: object) -> bool:
    return value is None or (is_int(value) and value > 0)

"""Wire types and rules: no I/O here."""

from .graph import DependencyGraph
from .hlc import ClockState, HybridLogicalClock, MemoryClockState
from .wire import META_FIELDS, ModelPayload, RecordError, SyncManifest, SyncRecord, checksum_of

__all__ = [
    "META_FIELDS",
    "ClockState",
    "DependencyGraph",
    "HybridLogicalClock",
    "MemoryClockState",
    "ModelPayload",
    "RecordError",
    "SyncManifest",
    "SyncRecord",
    "checksum_of",
]

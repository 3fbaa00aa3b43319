"""The sync engine and the protocols it is written against."""

from .engine import DatabaseEngine
from .memory import MemoryStorage
from .protocols import Cursor, DatabaseSyncStorage, SyncLock, Transport
from .results import DatabaseResult, SyncPhase, SyncStage, SyncStatus
from .tracker import FieldUpdateTracker

__all__ = [
    "Cursor",
    "DatabaseEngine",
    "DatabaseResult",
    "DatabaseSyncStorage",
    "FieldUpdateTracker",
    "MemoryStorage",
    "SyncLock",
    "SyncPhase",
    "SyncStage",
    "SyncStatus",
    "Transport",
]

"""The SQLite embodiment: change-capture triggers, shadow tables, the persisted clock, the storage and the lock."""

from .lock import SqliteSyncLock
from .storage import DEFAULT_TOMBSTONE_RETENTION, SqliteSyncStorage
from .values import ColumnKind

__all__ = ["DEFAULT_TOMBSTONE_RETENTION", "ColumnKind", "SqliteSyncLock", "SqliteSyncStorage"]

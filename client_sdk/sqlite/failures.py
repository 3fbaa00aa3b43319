"""Where SQLite's errors become the SDK's: every ``sqlite3.Error`` leaving the storage goes through here."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import DatabaseLockedError, StorageError


def database_path(connection: sqlite3.Connection) -> str | None:
    """The file behind the connection's main database; None if it is in memory or cannot be read."""
    try:
        row = connection.execute("SELECT file FROM pragma_database_list WHERE name = 'main'").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row and row[0] else None


def storage_error(exc: sqlite3.Error, path: str | None) -> StorageError:
    """The SDK's error for ``exc``: which file, and SQLite's own words for what went wrong."""
    where = path or "the in-memory database"
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in reason or "busy" in reason):
        return DatabaseLockedError(f"{where}: another connection kept the database locked ({reason})", path=path)
    return StorageError(f"{where}: {reason}", path=path)


@contextmanager
def storage_errors(connection: sqlite3.Connection | None, path: str | None = None) -> Iterator[None]:
    """Raise a ``sqlite3.Error`` from the block as :class:`StorageError` (naming the file)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise storage_error(exc, path if path is not None or connection is None else database_path(connection)) from exc

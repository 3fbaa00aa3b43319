"""Opening a database for sync and keeping its shadow objects in step with the app's schema."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping

import sqlite_utils

from ..errors import InvalidParameterError
from .ddl import S_KEY, S_LM, S_RECEIVED, Tracked
from .schema import PREFIX, quote

CACHE_KIB = 16 * 1024
"""Page cache of a sync connection, at least. Applying a page writes rows at random keys into a
table, its key index and its shadow table; a cache holding their upper levels and recent leaves
makes that about a third cheaper than SQLite's 2 MiB default. Memory is taken only as used."""


def migrate_tombstones(connection: sqlite3.Connection, tracked: Tracked) -> None:
    """Files made before tombstones kept their delete's own stamp and erased row get the columns
    (NULL: the delete's stamp is the tombstone's; nothing kept)."""
    columns = {name for (name,) in connection.execute("SELECT name FROM pragma_table_info(?)", (tracked.name("tomb"),))}
    for name, kind in (("hlc", "INTEGER"), ("row", "TEXT")):
        if columns and name not in columns:
            connection.execute(f'ALTER TABLE {tracked.tomb} ADD COLUMN "{name}" {kind}')


def grow_cache(connection: sqlite3.Connection) -> None:
    """Raise the connection's page cache to :data:`CACHE_KIB` (never lower an app's larger setting)."""
    size = connection.execute("PRAGMA cache_size").fetchone()[0]
    page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    current_kib = -size if size < 0 else size * page_size // 1024
    if current_kib < CACHE_KIB:
        connection.execute(f"PRAGMA cache_size = -{CACHE_KIB}")


def open_database(
    database: str | os.PathLike[str] | sqlite3.Connection | sqlite_utils.Database,
) -> tuple[sqlite3.Connection, sqlite_utils.Database, bool]:
    """(connection, sqlite_utils wrapper, whether we opened the connection and so must close it)."""
    if isinstance(database, sqlite_utils.Database):
        return database.conn, database, False
    if isinstance(database, sqlite3.Connection):
        # leave the app's connection as it was: no recursive_triggers change
        return database, sqlite_utils.Database(database, recursive_triggers=False), False
    if isinstance(database, (str, os.PathLike)):
        connection = sqlite3.connect(os.fspath(database), check_same_thread=False, timeout=30.0)
        return connection, sqlite_utils.Database(connection), True
    raise InvalidParameterError(
        f"database must be a path, an sqlite3.Connection or a sqlite_utils.Database, got {type(database).__name__}"
    )


def check_models(models: Mapping[str, str]) -> None:
    if not isinstance(models, Mapping) or not models:
        raise InvalidParameterError("models must map table name -> model label, with at least one table")
    for table, label in models.items():
        if not isinstance(table, str) or not table or not isinstance(label, str) or not label:
            raise InvalidParameterError(f"bad model entry {table!r}: {label!r} (both must be non-empty strings)")
    labels = list(models.values())
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise InvalidParameterError(f"model labels must be unique, repeated: {', '.join(duplicates)}")


def migrate_stamps(connection: sqlite3.Connection, tracked: Tracked) -> None:
    """Give the shadow table one stamp column per current field, keeping existing stamps.

    A new column's existing rows get stamp 0 (older than any write); a dropped
    column's stamps go, and last_modified is recomputed from what remains.
    """
    have = [name for (name,) in connection.execute("SELECT name FROM pragma_table_info(?)", (tracked.name("shadow"),))]
    stamps = [name for name in have if not name.startswith(PREFIX)]
    for name in tracked.fields:
        if name not in stamps:
            connection.execute(f"ALTER TABLE {tracked.shadow} ADD COLUMN {quote(name)} INTEGER DEFAULT 0")
    dropped = [name for name in stamps if name not in tracked.fields]
    for name in dropped:
        connection.execute(f"ALTER TABLE {tracked.shadow} DROP COLUMN {quote(name)}")
    if dropped:  # the stamps of the fields kept beside a row count too (kept.py)
        newest = ", ".join(f"coalesce({quote(name)}, 0)" for name in tracked.fields)
        kept = (f'coalesce((SELECT max(j.value) FROM {tracked.kept} AS k, json_each(k."stamps") AS j '
                f'WHERE k."key" = {tracked.shadow}.{S_KEY}), 0)')
        connection.execute(f"UPDATE {tracked.shadow} SET {S_LM} = max({S_RECEIVED}, {kept}, {newest})")

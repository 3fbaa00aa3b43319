"""What a tracked table looks like, read from SQLite itself, and whether it can be tracked."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from ..errors import InvalidParameterError
from .values import ColumnKind, kind_for

PREFIX = "_sync_"
"""Every internal SQL object (and nothing of the user's) starts with this."""


def quote(identifier: str) -> str:
    """An SQL identifier, double-quoted; the only way a name ever enters our SQL."""
    return '"' + identifier.replace('"', '""') + '"'


@dataclass(frozen=True)
class Column:
    name: str
    declared_type: str
    kind: ColumnKind
    not_null: bool = False


@dataclass(frozen=True)
class ForeignKey:
    """One FOREIGN KEY constraint: ``columns`` of this table point at ``parent_columns`` of ``parent``
    (``None`` where the constraint names no column: the parent's primary key)."""

    parent: str
    columns: tuple[str, ...]
    parent_columns: tuple[str | None, ...]


@dataclass(frozen=True)
class TableSchema:
    """A user table as far as sync cares."""

    name: str
    key: str
    """The single-column primary key holding the record keys."""
    columns: tuple[Column, ...]
    """Every synced column in table order, the key included; generated columns are left out."""
    foreign_keys: tuple[ForeignKey, ...]
    secondary_unique: bool
    """Whether a UNIQUE constraint other than the primary key exists (``REPLACE`` can then delete other rows)."""

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    def references(self) -> frozenset[str]:
        """Tables this one points at with FOREIGN KEYs."""
        return frozenset(fk.parent for fk in self.foreign_keys)


def affinity(declared_type: str) -> str:
    """SQLite's column affinity for a declared type (https://sqlite.org/datatype3.html, 3.1)."""
    upper = declared_type.upper()
    if "INT" in upper:
        return "INTEGER"
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in upper or not upper.strip():
        return "BLOB"
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def introspect(connection: sqlite3.Connection, table: str, identity_field: str) -> TableSchema:
    """Read ``table``'s schema; raise :class:`InvalidParameterError` if it cannot be tracked."""
    if table.startswith(PREFIX):
        raise InvalidParameterError(f"table {table!r}: names starting with {PREFIX!r} are reserved for sync's own objects")
    row = connection.execute(
        "SELECT type, sql FROM sqlite_master WHERE name = ? AND type IN ('table', 'view')", (table,)
    ).fetchone()
    if row is None:
        raise InvalidParameterError(f"table {table!r} does not exist: create it before tracking it")
    kind, sql = row
    if kind != "table" or (sql or "").upper().startswith("CREATE VIRTUAL"):
        raise InvalidParameterError(f"{table!r} is not an ordinary table: only ordinary tables can be tracked")
    info = connection.execute(
        'SELECT name, type, pk, hidden, "notnull" FROM pragma_table_xinfo(?) ORDER BY cid', (table,)
    ).fetchall()
    keys = [(pk, name, declared) for name, declared, pk, hidden, _ in info if pk]
    fix = f'declare a single text primary key, e.g. "{identity_field}" TEXT PRIMARY KEY holding UUID strings'
    if not keys:
        raise InvalidParameterError(f"table {table!r} has no PRIMARY KEY: {fix}")
    if len(keys) > 1:
        raise InvalidParameterError(f"table {table!r} has a composite PRIMARY KEY: {fix}")
    _, key, key_type = keys[0]
    if affinity(key_type) not in ("TEXT", "BLOB") or "BLOB" in key_type.upper():
        raise InvalidParameterError(
            f"table {table!r} has {_article(key_type)} {key_type} PRIMARY KEY ({key!r}), but keys must be text: {fix}")
    if key != identity_field:
        raise InvalidParameterError(
            f"table {table!r}: its primary key is {key!r}, but the identity field is {identity_field!r}; "
            f"rename the column or pass identity_field={key!r}"
        )
    columns = []
    for name, declared, _, hidden, not_null in info:
        if hidden:
            continue  # generated columns are derived, never written by sync
        if name.startswith(PREFIX):
            raise InvalidParameterError(f"table {table!r}: column {name!r} uses the reserved prefix {PREFIX!r}; rename it")
        columns.append(Column(name, declared or "", kind_for(declared or ""), bool(not_null)))
    constraints: dict[int, list[tuple[str, str, str | None]]] = {}
    for fk_id, parent, column, parent_column in connection.execute(
        'SELECT "id", "table", "from", "to" FROM pragma_foreign_key_list(?) ORDER BY "id", "seq"', (table,)
    ):
        constraints.setdefault(fk_id, []).append((parent, column, parent_column))
    foreign_keys = tuple(
        ForeignKey(parts[0][0], tuple(column for _, column, _ in parts), tuple(to for _, _, to in parts))
        for parts in constraints.values()
    )
    secondary_unique = any(
        unique and origin != "pk"
        for unique, origin in connection.execute('SELECT "unique", origin FROM pragma_index_list(?)', (table,))
    )
    return TableSchema(table, key, tuple(columns), foreign_keys, secondary_unique)


def _article(word: str) -> str:
    """"a" or "an" before ``word`` (by its first letter, which is how declared types read: "an INTEGER")."""
    return "an" if word[:1].upper() in ("A", "E", "I", "O", "U") else "a"

"""``SqliteSyncStorage``: the :class:`DatabaseSyncStorage` of a SQLite file.

The app's tables stay ordinary tables; triggers capture every write made to
them, from any connection or process (``ddl.py``), and the change log is folded
into shadow rows and tombstones before sync state is read (``changelog.py``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import cached_property, wraps
from itertools import chain, repeat
from operator import eq, itemgetter, le
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlite_utils

from ..engine.protocols import Cursor, ReferenceViolation
from ..errors import InvalidParameterError, RecordFieldError, UnknownModelError
from ..protocol.graph import DependencyGraph
from ..protocol.hlc import HLC_MAX, HybridLogicalClock, system_ms
from ..protocol.wire import META_FIELDS, SyncRecord
from . import changelog
from .clock import SqliteClockState
from .failures import database_path, storage_errors
from .ddl import (
    GLOBAL_DDL, LOG, META, S_KEY, S_LM, S_PENDING, S_RECEIVED, TABLES, TOMB_HLC, Tracked, UNLOGGED, storage_ddl, trigger_ddl,
)
from .lock import DEFAULT_STALE_AFTER, SqliteSyncLock
from .served import served_records
from .schema import PREFIX, ForeignKey, TableSchema, affinity, introspect, quote
from .transaction import Transactions
from .values import ColumnKind, ValueMappingError, ValueRule, rule_for, to_json, to_sqlite

ROLES = ("client", "server")
DEFAULT_TOMBSTONE_RETENTION = 90 * 24 * 3600.0
"""Seconds a server keeps tombstones by default (see :meth:`SqliteSyncStorage.purge_tombstones`)."""

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _serialized(method: Callable[Concatenate[SqliteSyncStorage, _P], _R]) -> Callable[Concatenate[SqliteSyncStorage, _P], _R]:
    """One thread at a time on the shared connection; SQLite's errors leave as :class:`StorageError`."""

    @wraps(method)
    def wrapper(self: SqliteSyncStorage, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._tx.lock, storage_errors(self.connection, self.path):
            return method(self, *args, **kwargs)

    return wrapper


def _keys_json(keys: Iterable[str]) -> str:
    """Keys as one bound JSON array, read back with ``json_each``: no statement per key, no variable limit."""
    return json.dumps(list(keys))


IN_KEYS = "(SELECT value FROM json_each(?))"
_ABSENT = object()
"""A field a record leaves out (``invalid_values``)."""


@dataclass(frozen=True)
class _Model:
    tracked: Tracked
    schema: TableSchema

    @cached_property
    def select(self) -> str:
        """Columns of a record: key, received_at, one stamp per field, then the row's values."""
        t = self.tracked
        stamps = ", ".join(f"s.{quote(name)}" for name in t.fields)
        values = ", ".join(f"b.{quote(name)}" for name in t.fields)
        return (
            f"SELECT s.{S_KEY}, s.{S_RECEIVED}, {stamps}, {values} "
            f"FROM {t.shadow} AS s CROSS JOIN {t.base} AS b ON b.{t.key_column} = s.{S_KEY}"
        )

    @cached_property
    def kinds(self) -> dict[str, ColumnKind]:
        return {column.name: column.kind for column in self.schema.columns}

    @cached_property
    def field_set(self) -> frozenset[str]:
        return frozenset(self.tracked.fields)

    @cached_property
    def text_references(self) -> tuple[tuple[ForeignKey, int], ...]:
        """Single-column FOREIGN KEYs whose column keeps bound text as it is (TEXT or no affinity),
        each with the column's index in a row of ``tracked.fields``."""
        declared = {column.name: column.declared_type for column in self.schema.columns}
        return tuple(
            (fk, self.tracked.fields.index(fk.columns[0]))
            for fk in self.schema.foreign_keys
            if len(fk.columns) == 1 and fk.columns[0] in declared and affinity(declared[fk.columns[0]]) in ("TEXT", "BLOB")
        )

    @cached_property
    def plain(self) -> bool:
        """Every column binds JSON scalars as they are (booleans as 0/1), and none is named like a meta field."""
        return self.field_set.isdisjoint(META_FIELDS) and all(
            kind in (ColumnKind.PLAIN, ColumnKind.BOOLEAN) for kind in self.kinds.values()
        )

    @cached_property
    def _converted(self) -> tuple[tuple[int, ColumnKind], ...]:
        """(index, kind) of the columns whose values need :func:`to_json` even when no value is bytes."""
        return tuple((index, column.kind) for index, column in enumerate(self.schema.columns) if column.kind is not ColumnKind.PLAIN)

    def records(self, rows: list[tuple[Any, ...]], *, served: bool = False) -> list[tuple[str, SyncRecord]]:
        """Rows of :attr:`select` as (key, record), in order; ``served``: records to be sent, which
        carry their wire text (see ``served.py``).

        Built column by column with C-level passes (this runs for every row
        served); values are mapped per column kind, and a page with no bytes in
        it (the usual case) converts only the non-plain columns.
        """
        if not rows:
            return []
        n = len(self.tracked.fields)
        columns = list(zip(*map(itemgetter(slice(2 + n, None)), rows)))
        converted = self._converted
        if bytes in set(map(type, chain.from_iterable(columns))):
            converted = tuple(enumerate(column.kind for column in self.schema.columns))
        for index, kind in converted:
            columns[index] = _json_column(kind, columns[index])
        keys = list(map(itemgetter(0), rows))
        if served:
            stamp_columns = list(zip(*map(itemgetter(slice(2, 2 + n)), rows)))
            page = served_records(self.tracked.fields, columns, stamp_columns, list(map(itemgetter(1), rows)))
            if page is not None:
                return list(zip(keys, page))
        datas = map(dict, map(zip, repeat(self.schema.fields), zip(*columns)))
        stamps = list(map(itemgetter(slice(2, 2 + n)), rows))
        timestamps = list(map(dict, map(zip, repeat(self.tracked.fields), stamps)))
        if None in set(chain.from_iterable(stamps)):  # fields with no stamp are left out of the map
            timestamps = [{name: stamp for name, stamp in m.items() if stamp is not None} for m in timestamps]
        return list(zip(keys, map(SyncRecord, datas, timestamps, map(itemgetter(1), rows))))


class SqliteSyncStorage:
    """Sync state for the tables of one SQLite database.

    ``database``: a path, an ``sqlite3.Connection`` or a ``sqlite_utils.Database``.
    ``models``: table name -> model label (``{"tasks": "todo.Task"}``); ``None``
    reopens the tables already tracked in the file. Opening installs (or, after
    a schema change, re-installs) the triggers and shadow objects, all named
    with the ``_sync_`` prefix, in the same file. ``role`` is ``"client"``
    (tracks what is pending) or ``"server"`` (serves changes since a checkpoint).
    ``node_id`` names a new database's node (default: a random UUID); the id is
    stored in the file, and reopening with a different one is refused.

    The connection runs with WAL and ``foreign_keys`` on. Writes from other
    connections and processes are captured by the triggers alone. One gap: if
    a table is rebuilt in a way that drops the triggers (the twelve-step ALTER
    TABLE), rows inserted or deleted before the next open are caught up then,
    but updates made in that window are not seen.
    """

    def __init__(
        self,
        database: str | os.PathLike[str] | sqlite3.Connection | sqlite_utils.Database,
        models: Mapping[str, str] | None = None,
        *,
        role: str = "client",
        identity_field: str = "id",
        node_id: str | None = None,
    ) -> None:
        if role not in ROLES:
            raise InvalidParameterError(f"role must be one of {ROLES}, got {role!r}")
        if not isinstance(identity_field, str) or not identity_field:
            raise InvalidParameterError("identity_field must be a non-empty string")
        if node_id is not None and (not isinstance(node_id, str) or not node_id):
            raise InvalidParameterError("node_id must be a non-empty string")
        self.role = role
        self.identity_field = identity_field
        named = os.fspath(database) if isinstance(database, (str, os.PathLike)) else None
        with storage_errors(None, named):
            self.connection, self.db, self._owns_connection = _open(database)
        self.path = named or database_path(self.connection)
        self._tx = Transactions(self.connection, self.path)
        self._models: dict[str, _Model] = {}
        self._labels_by_table: dict[str, str] = {}
        self._bound_references: dict[tuple[str, ForeignKey], set[Any] | None] = {}
        """(label, text FOREIGN KEY) -> the values writes bound to its column since :meth:`reference_violations`
        last looked; None once a write bound it row by row (see ``_write_rows``)."""
        self._writes_alone: dict[str, tuple[tuple[int, int], bool]] = {}
        """Table -> (schema versions of main and temp, what :meth:`_upsert_writes_alone` found then)."""
        self._rules: dict[str, tuple[tuple[str, ValueRule], ...]] = {}
        """Label -> (column, the values it takes) for :meth:`invalid_values`, the key column left out."""
        try:
            with storage_errors(self.connection, self.path):
                self._setup(models, node_id)
        except BaseException:
            self.close()
            raise
        self.clock = HybridLogicalClock(SqliteClockState(self.connection, self._tx, self._prepare))

    # ------------------------------------------------------------------ setup

    def _setup(self, models: Mapping[str, str] | None, node_id: str | None) -> None:
        if not self.connection.in_transaction:
            self.connection.execute("PRAGMA journal_mode = WAL")
            self.connection.execute("PRAGMA foreign_keys = ON")
        _grow_cache(self.connection)
        with self._tx():
            for statement in GLOBAL_DDL:
                self.connection.execute(statement)
            self.node_id = self._node_id(node_id)
            registry = changelog.read_registry(self.connection)
            targets = self._fold_targets(registry)
            for t in targets:
                _migrate_tombstones(self.connection, t)
            changelog.fold(self.connection, targets)  # with the fields the triggers were made for
            if models is None:
                models = {name: t.label for name, t in registry.items()}
                if not models:
                    raise InvalidParameterError("this database tracks no tables yet: pass models={table: label}")
            self._check_models(models)
            for table, label in models.items():
                self._install(introspect(self.connection, table, self.identity_field), label, registry.get(table))

    def _node_id(self, given: str | None) -> str:
        row = self.connection.execute(f"SELECT value FROM {META} WHERE name = 'node_id'").fetchone()
        if row is not None:
            if given is not None and given != row[0]:
                raise InvalidParameterError(f"this database belongs to node {row[0]!r}, not {given!r}")
            return row[0]
        node_id = given or str(uuid.uuid4())
        self.connection.execute(f"INSERT INTO {META} (name, value) VALUES ('node_id', ?)", (node_id,))
        return node_id

    @staticmethod
    def _check_models(models: Mapping[str, str]) -> None:
        if not isinstance(models, Mapping) or not models:
            raise InvalidParameterError("models must map table name -> model label, with at least one table")
        for table, label in models.items():
            if not isinstance(table, str) or not table or not isinstance(label, str) or not label:
                raise InvalidParameterError(f"bad model entry {table!r}: {label!r} (both must be non-empty strings)")
        labels = list(models.values())
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise InvalidParameterError(f"model labels must be unique, repeated: {', '.join(duplicates)}")

    def _install(self, schema: TableSchema, label: str, current: Tracked | None) -> None:
        """Create or bring up to date the shadow objects and triggers of one table."""
        if current is not None:
            table_id = current.id
        else:
            table_id = self.connection.execute(f'SELECT coalesce(max("id"), 0) + 1 FROM {TABLES}').fetchone()[0]
        t = Tracked(table_id, schema.name, label, schema.key, schema.fields, schema.secondary_unique)
        for statement in storage_ddl(t, self.role):
            self.connection.execute(statement)
        self._migrate_stamps(t)
        existing = dict(
            self.connection.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ? AND name LIKE ? ESCAPE '\\'",
                (t.table, PREFIX.replace("_", "\\_") + "%"),
            ).fetchall()
        )
        capturing = current is not None and existing == trigger_ddl(current)
        expected = trigger_ddl(t)
        if existing != expected:
            for name in existing:
                self.connection.execute(f"DROP TRIGGER {quote(name)}")
            for sql in expected.values():
                self.connection.execute(sql)
        self.connection.execute(
            f'INSERT OR REPLACE INTO {TABLES} ("name", "id", "label", "key", "fields", "sweep") VALUES (?, ?, ?, ?, ?, ?)',
            (t.table, t.id, t.label, t.key, json.dumps(list(t.fields)), int(t.sweep)),
        )
        if not capturing:
            # first tracking, or triggers were dropped (a rebuilt table): catch up on what was not logged
            stamp = changelog.fresh_stamp(self.connection)
            changelog.backfill(self.connection, t, stamp)
            changelog.sweep_orphans(self.connection, t, stamp)
        self._models[label] = _Model(t, schema)
        self._labels_by_table[t.table] = label

    def _migrate_stamps(self, t: Tracked) -> None:
        """Give the shadow table one stamp column per current field, keeping existing stamps.

        A new column's existing rows get stamp 0 (older than any write); a dropped
        column's stamps go, and last_modified is recomputed from what remains.
        """
        have = [name for (name,) in self.connection.execute("SELECT name FROM pragma_table_info(?)", (t.name("shadow"),))]
        stamps = [name for name in have if not name.startswith(PREFIX)]
        for name in t.fields:
            if name not in stamps:
                self.connection.execute(f"ALTER TABLE {t.shadow} ADD COLUMN {quote(name)} INTEGER DEFAULT 0")
        dropped = [name for name in stamps if name not in t.fields]
        for name in dropped:
            self.connection.execute(f"ALTER TABLE {t.shadow} DROP COLUMN {quote(name)}")
        if dropped:
            newest = ", ".join(f"coalesce({quote(name)}, 0)" for name in t.fields)
            self.connection.execute(f"UPDATE {t.shadow} SET {S_LM} = max({S_RECEIVED}, {newest})")

    def _fold_targets(self, registry: Mapping[str, Tracked]) -> list[Tracked]:
        tables = {name for (name,) in self.connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return [t for name, t in registry.items() if name in tables]

    def _prepare(self) -> None:
        """Fold the change log, if anything was logged, so shadow rows and tombstones are current."""
        with self._tx.lock:
            if changelog.log_is_empty(self.connection):
                return
            with self._tx.write():
                changelog.fold(self.connection, self._fold_targets(changelog.read_registry(self.connection)))

    # ------------------------------------------------------------------ names

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self._models)

    def table_for(self, label: str) -> str:
        return self._model(label).tracked.table

    def label_for(self, table: str) -> str:
        try:
            return self._labels_by_table[table]
        except KeyError:
            raise UnknownModelError(f"table {table!r} is not tracked") from None

    def fields(self, label: str) -> frozenset[str]:
        """The table's column names: records may carry no other fields."""
        return frozenset(self._model(label).tracked.fields)

    @_serialized
    def invalid_values(self, label: str, records: Mapping[str, SyncRecord]) -> dict[str, str]:
        """Records holding a value its column cannot take as sent (see :func:`values.rule_for`): key ->
        each such field, with what its column takes. Fields a record leaves out or the table lacks are
        not looked at. A page is checked a column at a time by the set of types in it; only a column
        holding a type that needs a closer look (a float in an INTEGER column, base64 text for a BLOB)
        is read value by value."""
        datas = [record.data for record in records.values()]
        found: dict[int, list[str]] = {}
        for name, rule in self._value_rules(label) if datas else ():
            column = list(map(dict.get, datas, repeat(name), repeat(_ABSENT)))
            if set(map(type, column)) - {object} <= rule.held:
                continue
            for index, value in enumerate(column):
                problem = None if value is _ABSENT else rule.problem(name, value)
                if problem is not None:
                    found.setdefault(index, []).append(problem)
        keys = list(records)
        return {keys[index]: "; ".join(problems[:5]) for index, problems in found.items()}

    def _value_rules(self, label: str) -> tuple[tuple[str, ValueRule], ...]:
        rules = self._rules.get(label)
        if rules is None:
            model = self._model(label)
            table, key = model.tracked.table, model.tracked.key
            not_null = dict(self.connection.execute('SELECT name, "notnull" FROM pragma_table_info(?)', (table,)))
            rules = self._rules[label] = tuple(
                (column.name, rule_for(column.kind, affinity(column.declared_type), nullable=not not_null.get(column.name)))
                for column in model.schema.columns
                if column.name != key
            )
        return rules

    def _model(self, label: str) -> _Model:
        try:
            return self._models[label]
        except KeyError:
            raise UnknownModelError(f"unknown model label {label!r}") from None

    def dependency_graph(self) -> DependencyGraph:
        """Parents before children, from the FOREIGN KEYs among tracked tables (self-references ignored)."""
        edges = {}
        for label, model in self._models.items():
            parents = model.schema.references - {model.tracked.table}
            edges[label] = {self._labels_by_table[table] for table in parents if table in self._labels_by_table}
        return DependencyGraph(edges)

    # ------------------------------------------------------------------ transactions, lock, lifetime

    def transaction(self) -> AbstractContextManager[None]:
        """One write transaction (BEGIN IMMEDIATE); nested calls are savepoints."""
        return self._tx()

    def lock(self, *, stale_after: float = DEFAULT_STALE_AFTER) -> SqliteSyncLock:
        return SqliteSyncLock(self.connection, self._tx, stale_after=stale_after)

    def close(self) -> None:
        """Close the connection if this storage opened it."""
        if self._owns_connection:
            self.connection.close()

    # ------------------------------------------------------------------ reading changes

    @_serialized
    def get_changed_since(
        self, label: str, since: int, *, after: Cursor | None = None, limit: int | None = None
    ) -> list[tuple[str, SyncRecord]]:
        model = self._model(label)
        self._prepare()
        where, params = _position(since, after)
        return self._page(model, where, params, limit, served=True)

    @_serialized
    def get_deletes_since(self, label: str, since: int, *, until: int | None = None) -> dict[str, int]:
        t = self._model(label).tracked
        self._prepare()
        return dict(self.connection.execute(
            f'SELECT "key", {TOMB_HLC} FROM {t.tomb} WHERE "stamp" > ? AND "stamp" <= ?',
            (since, HLC_MAX if until is None else until),
        ))

    @_serialized
    def get_records(self, label: str, keys: Iterable[str]) -> dict[str, SyncRecord]:
        model = self._model(label)
        self._prepare()
        return self._read_records(model, _keys_json(keys))

    def _read_records(self, model: _Model, keys: str) -> dict[str, SyncRecord]:
        return dict(model.records(self._fetch_all(f"{model.select} WHERE s.{S_KEY} IN {IN_KEYS}", (keys,))))

    @_serialized
    def get_buried(self, label: str, keys: Iterable[str]) -> dict[str, SyncRecord]:
        t = self._model(label).tracked
        self._prepare()
        rows = self.connection.execute(
            f'SELECT "key", "row" FROM {t.tomb} WHERE "row" IS NOT NULL AND "key" IN {IN_KEYS}', (_keys_json(keys),)
        )
        return {key: SyncRecord.from_dict(json.loads(text), key=key, label=label) for key, text in rows}

    @_serialized
    def keep_buried(self, label: str, records: dict[str, SyncRecord]) -> None:
        t = self._model(label).tracked
        with self._tx.write():
            self.connection.executemany(
                f'UPDATE {t.tomb} SET "row" = ? WHERE "key" = ?',
                [(_record_json(record), key) for key, record in records.items()],
            )

    @_serialized
    def reference_violations(
        self, written: Mapping[str, Collection[str]], deleted: Mapping[str, Collection[str]]
    ) -> list[ReferenceViolation]:
        """Rows of tracked tables whose FOREIGN KEY points at nothing after a round wrote the rows
        ``written`` and deleted the rows ``deleted`` (label -> keys), inside the current transaction
        (foreign keys are deferred while sync applies a page): (label, key, parent label, parent key).

        Only what the round can have broken is read: the written rows' references, and the rows
        referring to deleted ones. Written rows are read back only if a value they bound to the
        key is missing from its parent table (the distinct values, a few per page, are looked up
        first). A constraint on other columns than the parent's key is checked over the whole
        table, with ``PRAGMA foreign_key_check``.
        """
        found = []
        whole_tables = set()
        bound_references, self._bound_references = self._bound_references, {}
        for label, model in self._models.items():
            children = written.get(label, ())
            for fk in model.schema.foreign_keys:
                parent_label = self._labels_by_table.get(fk.parent)
                parent_key = self._models[parent_label].tracked.key if parent_label else None
                by_key = parent_key is not None and fk.parent_columns in ((None,), (parent_key,))
                column = parent_key if by_key else fk.parent_columns[0]
                single = len(fk.columns) == 1 and column is not None
                gone = deleted.get(parent_label, ()) if parent_label else ()
                bound = bound_references.get((label, fk))
                if single and children and not (by_key and bound is not None and self._all_present(fk, column, bound)):
                    found += self._dangling(model, fk, column, f"c.{model.tracked.key_column} IN {IN_KEYS}", children)
                if by_key and gone:
                    found += self._dangling(model, fk, column, f"c.{quote(fk.columns[0])} IN {IN_KEYS}", gone)
                parent_changed = bool(gone or (parent_label and written.get(parent_label)))
                if (not single and children) or (not by_key and parent_changed):
                    whole_tables.add(model.tracked.table)  # the values it referred to are gone: look everywhere
        for table in sorted(whole_tables):
            found += self._table_violations(table)
        return list(dict.fromkeys(found))

    def _all_present(self, fk: ForeignKey, parent_column: str, values: set[Any]) -> bool:
        """Every one of ``values`` (text, or NULL) names a row of ``fk``'s parent table."""
        if not set(map(type, values)) <= {str, type(None)}:
            return False
        texts = [value for value in values if value is not None]
        if not texts:
            return True
        parent = f"SELECT 1 FROM {quote(fk.parent)} AS p WHERE p.{quote(parent_column)} = value"
        row = self.connection.execute(f"SELECT NOT EXISTS (SELECT 1 FROM json_each(?) WHERE NOT EXISTS ({parent}))",
                                      (json.dumps(texts),)).fetchone()
        return bool(row[0])

    def _dangling(
        self, model: _Model, fk: ForeignKey, parent_column: str, where: str, keys: Collection[str]
    ) -> list[ReferenceViolation]:
        """Rows of ``model`` selected by ``where`` (bound to ``keys``) whose single-column ``fk`` names no row."""
        t = model.tracked
        reference = f"c.{quote(fk.columns[0])}"
        rows = self.connection.execute(
            f"SELECT c.{t.key_column}, {reference} FROM {t.base} AS c WHERE {where} AND {reference} IS NOT NULL "
            f"AND NOT EXISTS (SELECT 1 FROM {quote(fk.parent)} AS p WHERE p.{quote(parent_column)} = {reference}) "
            f"ORDER BY 1",
            (_keys_json(keys),),
        )
        parent_label = self._labels_by_table.get(fk.parent)
        return [ReferenceViolation(t.label, key, parent_label, parent_key) for key, parent_key in rows]

    def _table_violations(self, table: str) -> list[ReferenceViolation]:
        found = []
        for _, rowid, parent, fkid in self.connection.execute("PRAGMA foreign_key_check(" + quote(table) + ")").fetchall():
            if rowid is None:
                continue
            column = self.connection.execute(
                'SELECT "from" FROM pragma_foreign_key_list(?) WHERE "id" = ?', (table, fkid)
            ).fetchone()[0]
            key, parent_key = self.connection.execute(
                f"SELECT {quote(self.identity_field)}, {quote(column)} FROM {quote(table)} WHERE rowid = ?", (rowid,)
            ).fetchone()
            found.append(ReferenceViolation(self._labels_by_table[table], key, self._labels_by_table.get(parent), parent_key))
        return found

    @_serialized
    def get_tombstones(self, label: str, keys: Iterable[str]) -> dict[str, int]:
        t = self._model(label).tracked
        self._prepare()
        return dict(self.connection.execute(f'SELECT "key", {TOMB_HLC} FROM {t.tomb} WHERE "key" IN {IN_KEYS}', (_keys_json(keys),)))

    def _page(
        self, model: _Model, where: str, params: list[Any], limit: int | None, *, served: bool = False
    ) -> list[tuple[str, SyncRecord]]:
        sql = f"{model.select} WHERE {where} ORDER BY s.{S_LM}, s.{S_KEY} LIMIT ?"
        return model.records(self._fetch_all(sql, [*params, -1 if limit is None else limit]), served=served)

    def _fetch_all(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows of a query. Another program may have stored bytes that are not UTF-8 in a TEXT
        column, which fails the read: it is then read again with such bytes as lone surrogates,
        so that the row can be named and quarantined instead of failing every sync."""
        try:
            return self.connection.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            factory = self.connection.text_factory
            self.connection.text_factory = _lenient_text
            try:
                return self.connection.execute(sql, params).fetchall()
            finally:
                self.connection.text_factory = factory

    # ------------------------------------------------------------------ writing what sync decided

    @_serialized
    def upsert_many(
        self, label: str, records: dict[str, SyncRecord], *, received_at: int | None = None, guard: bool = True
    ) -> list[str]:
        model = self._model(label)
        t = model.tracked
        with self._tx.write():
            self._prepare()
            if not records:
                return []
            skipped = self._stale(t, records) if guard else []
            stale = set(skipped)
            accepted = {key: record for key, record in records.items() if key not in stale} if stale else records
            if accepted:
                self._write_rows(model, accepted, received_at or 0)
            return skipped

    def _stale(self, t: Tracked, records: dict[str, SyncRecord]) -> list[str]:
        """Keys of ``records`` older than the row or tombstone stored here (the staleness guard, 7.6)."""
        keys = _keys_json(records)
        stored = dict(self.connection.execute(f"SELECT {S_KEY}, {S_LM} FROM {t.shadow} WHERE {S_KEY} IN {IN_KEYS}", (keys,)))
        tombs = dict(self.connection.execute(f'SELECT "key", {TOMB_HLC} FROM {t.tomb} WHERE "key" IN {IN_KEYS}', (keys,)))
        return [
            key for key, record in records.items()
            if (stored[key] if key in stored else tombs.get(key, -1)) > record.last_modified
        ]

    def _write_rows(self, model: _Model, records: dict[str, SyncRecord], received_at: int) -> None:
        t = model.tracked
        shadow_rows = _shadow_rows(t, records, received_at)
        self.connection.execute("PRAGMA defer_foreign_keys = ON")  # a page may hold children before parents
        with self._unlogged(t, None if self._upsert_writes_alone(model) else _keys_json(records)):
            plain = _plain_rows(model, records)
            if plain is None or not self._upsert_as_bound(t, plain):
                plain = None
                for names, rows in _value_rows(model, records).items():
                    self.connection.executemany(_upsert_sql(t, names), rows)
        self._note_references(model, plain)
        stamp_columns = ", ".join(quote(name) for name in t.fields)
        marks = ", ".join("?" for _ in range(3 + len(t.fields)))
        self.connection.executemany(
            f"INSERT OR REPLACE INTO {t.shadow} ({S_KEY}, {S_LM}, {S_RECEIVED}, {stamp_columns}, {S_PENDING}) "
            f"VALUES ({marks}, 0)",
            shadow_rows,
        )
        if self.connection.execute(f"SELECT EXISTS (SELECT 1 FROM {t.tomb})").fetchone()[0]:  # none on a first sync
            self.connection.execute(f'DELETE FROM {t.tomb} WHERE "key" IN {IN_KEYS}', (_keys_json(records),))
        changelog.write_clock(self.connection, max(map(itemgetter(1), shadow_rows)))

    @contextmanager
    def _unlogged(self, t: Tracked, keys: str | None) -> Iterator[None]:
        """Keep the capture triggers from logging the block's writes to the rows ``keys`` (a JSON array)
        or, with None, to any row of the table. (A block that raises fails the transaction, which
        takes the mark away with it.)"""
        if keys is None:  # '' starts before every key (keys compare as text)
            self.connection.execute(f'INSERT INTO {UNLOGGED} ("tbl", "key", "through") VALUES (?, \'\', NULL)', (t.id,))
        else:
            self.connection.execute(
                f'INSERT OR IGNORE INTO {UNLOGGED} ("tbl", "key", "through") SELECT ?, value, value FROM json_each(?)', (t.id, keys)
            )
        yield
        self.connection.execute(f'DELETE FROM {UNLOGGED} WHERE "tbl" = ?', (t.id,))

    def _upsert_writes_alone(self, model: _Model) -> bool:
        """Whether upserting rows of the table can write no other row: no trigger of the app's is on
        it (TEMP ones included), and it has no secondary UNIQUE constraint. (Without one, an upsert,
        which never changes a row's key, changes no column a FOREIGN KEY can refer to, so no foreign
        key action fires; and no REPLACE can delete another row.) Then every write to the table while
        a page is upserted is the page's own. Read again whenever the schema changed."""
        t = model.tracked
        version = (self.connection.execute("PRAGMA main.schema_version").fetchone()[0],
                   self.connection.execute("PRAGMA temp.schema_version").fetchone()[0])
        known = self._writes_alone.get(t.table)
        if known is not None and known[0] == version:
            return known[1]
        triggers = self.connection.execute(
            "SELECT EXISTS (SELECT 1 FROM (SELECT * FROM sqlite_master UNION ALL SELECT * FROM sqlite_temp_master) "
            "WHERE type = 'trigger' AND tbl_name = ? COLLATE NOCASE AND name NOT GLOB ?)",
            (t.table, f"{PREFIX}*"),
        ).fetchone()[0]
        alone = not triggers and not t.sweep
        self._writes_alone[t.table] = (version, alone)
        return alone

    def _upsert_as_bound(self, t: Tracked, rows: list[Sequence[Any]]) -> bool:
        """Upsert rows whose values bind as they are; False if the binding refuses one (a list, an
        object, an integer past 64 bits). The rows before that one are written then, with the very
        values the record-by-record path binds for them (it converts only what does not bind), so
        writing the page again that way repeats them harmlessly; no savepoint is taken for it (see
        :meth:`Transactions.write`)."""
        try:
            self.connection.executemany(_upsert_sql(t, t.fields), rows)
        except (OverflowError, sqlite3.ProgrammingError):
            return False
        return True

    def _note_references(self, model: _Model, plain: list[Sequence[Any]] | None) -> None:
        """Remember what a page bound to its text FOREIGN KEY columns, for :meth:`reference_violations`.
        (Rows bound one by one, with converted values, are not followed: they are read back.)"""
        for fk, index in model.text_references:
            slot = (model.tracked.label, fk)
            values = self._bound_references.setdefault(slot, set())
            if plain is None:
                self._bound_references[slot] = None
            elif values is not None:
                values.update(map(itemgetter(index), plain))

    @_serialized
    def delete_many(
        self, label: str, deletes: dict[str, int], *, received_at: int | None = None, guard: bool = True
    ) -> list[str]:
        model = self._model(label)
        t = model.tracked
        with self._tx.write():
            self._prepare()
            if not deletes:
                return []
            keys = _keys_json(deletes)
            stored = dict(self.connection.execute(f"SELECT {S_KEY}, {S_LM} FROM {t.shadow} WHERE {S_KEY} IN {IN_KEYS}", (keys,)))
            skipped = [key for key, stamp in deletes.items() if guard and stored.get(key, -1) > stamp]
            accepted = {key: stamp for key, stamp in deletes.items() if key not in skipped}
            if accepted:
                keys = _keys_json(accepted)
                erased = {} if received_at is None else self._read_records(model, keys)
                # ON DELETE actions still fire other rows' triggers: those rows become local changes.
                # A child left dangling is found before the round commits (reference_violations).
                self.connection.execute("PRAGMA defer_foreign_keys = ON")
                with self._unlogged(t, keys):
                    self.connection.execute(f"DELETE FROM {t.base} WHERE {t.key_column} IN {IN_KEYS}", (keys,))
                self.connection.execute(f"DELETE FROM {t.shadow} WHERE {S_KEY} IN {IN_KEYS}", (keys,))
                # with received_at, the tombstone is delivered from then on, keeps the delete's own
                # stamp and what it erased
                rows = [(key, own if received_at is None else received_at, None if received_at is None else own,
                         _record_json(erased.get(key))) for key, own in accepted.items()]
                self.connection.executemany(
                    f'INSERT INTO {t.tomb} ("key", "stamp", "hlc", "row", "pending") VALUES (?, ?, ?, ?, 0) '
                    'ON CONFLICT ("key") DO UPDATE SET "stamp" = max("stamp", excluded."stamp"), '
                    f'"hlc" = CASE WHEN excluded."hlc" IS NULL THEN NULL ELSE max({TOMB_HLC}, excluded."hlc") END, '
                    '"row" = coalesce(excluded."row", "row"), "pending" = 0',
                    rows,
                )
                changelog.write_clock(self.connection, max(*accepted.values(), received_at or 0))
            return skipped

    # ------------------------------------------------------------------ client role: pending local changes

    @_serialized
    def get_pending(self, label: str, *, after: Cursor | None = None, limit: int | None = None) -> list[tuple[str, SyncRecord]]:
        model = self._model(label)
        self._prepare()
        where, params = _position(-1, after)
        return self._page(model, f"s.{S_PENDING} = 1 AND {where}", params, limit)

    @_serialized
    def get_pending_deletes(self, label: str) -> dict[str, int]:
        t = self._model(label).tracked
        self._prepare()
        return dict(self.connection.execute(f'SELECT "key", "stamp" FROM {t.tomb} WHERE "pending" = 1'))

    @_serialized
    def get_pending_keys(self, label: str, keys: Iterable[str]) -> set[str]:
        t = self._model(label).tracked
        self._prepare()
        anything = self.connection.execute(  # both answered by the partial "pending" indexes
            f"SELECT EXISTS (SELECT 1 FROM {t.shadow} WHERE {S_PENDING} = 1) "
            f'OR EXISTS (SELECT 1 FROM {t.tomb} WHERE "pending" = 1)'
        ).fetchone()[0]
        if not anything:
            return set()
        wanted = _keys_json(keys)
        rows = self.connection.execute(
            f"SELECT {S_KEY} FROM {t.shadow} WHERE {S_PENDING} = 1 AND {S_KEY} IN {IN_KEYS} "
            f'UNION SELECT "key" FROM {t.tomb} WHERE "pending" = 1 AND "key" IN {IN_KEYS}',
            (wanted, wanted),
        )
        return {key for (key,) in rows}

    @_serialized
    def has_pending_after(self, stamp: int) -> bool:
        self._prepare()
        for model in self._models.values():
            t = model.tracked
            if self.connection.execute(  # both answered by the partial "pending" indexes
                f"SELECT EXISTS (SELECT 1 FROM {t.shadow} WHERE {S_PENDING} = 1 AND {S_LM} > ?) "
                f'OR EXISTS (SELECT 1 FROM {t.tomb} WHERE "pending" = 1 AND "stamp" > ?)',
                (stamp, stamp),
            ).fetchone()[0]:
                return True
        return False

    @_serialized
    def acknowledge(self, label: str, records: dict[str, int], deletes: dict[str, int]) -> None:
        t = self._model(label).tracked
        with self._tx.write():
            self._prepare()  # a write made since the push changes last_modified: it stays pending
            self.connection.executemany(
                f"UPDATE {t.shadow} SET {S_PENDING} = 0 WHERE {S_KEY} = ? AND {S_LM} = ?", records.items()
            )
            self.connection.executemany(
                f'UPDATE {t.tomb} SET "pending" = 0 WHERE "key" = ? AND "stamp" = ?', deletes.items()
            )

    @_serialized
    def mark_pending(self, label: str, keys: Iterable[str]) -> None:
        t = self._model(label).tracked
        with self._tx.write():
            self._prepare()
            self.connection.execute(f"UPDATE {t.shadow} SET {S_PENDING} = 1 WHERE {S_KEY} IN {IN_KEYS}", (_keys_json(keys),))

    @_serialized
    def pending_count(self) -> int:
        """Local changes (rows and tombstones) the server has not acknowledged yet."""
        self._prepare()
        total = 0
        for model in self._models.values():
            t = model.tracked
            total += self.connection.execute(
                f"SELECT (SELECT count(*) FROM {t.shadow} WHERE {S_PENDING} = 1) "
                f'+ (SELECT count(*) FROM {t.tomb} WHERE "pending" = 1)'
            ).fetchone()[0]
        return total

    # ------------------------------------------------------------------ sync state

    @_serialized
    def get_checkpoint(self) -> int:
        row = self.connection.execute(f"SELECT value FROM {META} WHERE name = 'checkpoint'").fetchone()
        return 0 if row is None else int(row[0])

    @_serialized
    def save_checkpoint(self, checkpoint: int, after_keys: dict[str, dict] | None = None) -> None:
        with self._tx.write():
            self.connection.executemany(
                f"INSERT INTO {META} (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [("checkpoint", checkpoint), ("after_keys", json.dumps(after_keys or {}))],
            )

    @_serialized
    def get_after_keys(self) -> dict[str, dict]:
        row = self.connection.execute(f"SELECT value FROM {META} WHERE name = 'after_keys'").fetchone()
        return {} if row is None else json.loads(row[0])

    # ------------------------------------------------------------------ maintenance

    @_serialized
    def purge_tombstones(self, *, retention_seconds: float | None = None) -> int:
        """Drop tombstones nobody needs any more; return how many went.

        Client role: tombstones the server has acknowledged (not pending) at or
        below the stored checkpoint; ``retention_seconds`` is not accepted.

        Server role: tombstones older than ``retention_seconds`` (default 90
        days). The cost: a device that stays offline longer than the window
        never hears of those deletes, so it keeps rows that were deleted
        elsewhere (and a change it then makes to one brings the row back).
        """
        if self.role == "client":
            if retention_seconds is not None:
                raise InvalidParameterError("a client purges what the server acknowledged; retention_seconds is for servers")
            where, params = '"pending" = 0 AND "stamp" <= ?', (self.get_checkpoint(),)
        else:
            retention = DEFAULT_TOMBSTONE_RETENTION if retention_seconds is None else retention_seconds
            if retention < 0:
                raise InvalidParameterError("retention_seconds must be >= 0")
            where, params = '"stamp" < ?', (max(0, system_ms() - int(retention * 1000)) << 16,)
        purged = 0
        with self._tx.write():
            self._prepare()
            for model in self._models.values():
                purged += self.connection.execute(f"DELETE FROM {model.tracked.tomb} WHERE {where}", params).rowcount
        return purged

    @_serialized
    def untrack(self, table: str) -> None:
        """Stop tracking ``table``: remove its triggers, shadow and tombstone tables and log entries."""
        with self._tx():
            self._prepare()
            registry = changelog.read_registry(self.connection)
            if table not in registry:
                raise UnknownModelError(f"table {table!r} is not tracked")
            t = registry[table]
            triggers = self.connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ? AND name LIKE ? ESCAPE '\\'",
                (table, PREFIX.replace("_", "\\_") + "%"),
            ).fetchall()
            for (name,) in triggers:
                self.connection.execute(f"DROP TRIGGER {quote(name)}")
            for kind, name in t.object_names():
                self.connection.execute(f"DROP {kind.upper()} IF EXISTS {quote(name)}")
            self.connection.execute(f'DELETE FROM {LOG} WHERE "tbl" = ?', (t.id,))
            self.connection.execute(f'DELETE FROM {TABLES} WHERE "name" = ?', (table,))
        label = self._labels_by_table.pop(table, None)
        if label is not None:
            del self._models[label]


CACHE_KIB = 16 * 1024
"""Page cache of a sync connection, at least. Applying a page writes rows at random keys into a
table, its key index and its shadow table; a cache holding their upper levels and recent leaves
makes that about a third cheaper than SQLite's 2 MiB default. Memory is taken only as used."""


def _grow_cache(connection: sqlite3.Connection) -> None:
    """Raise the connection's page cache to :data:`CACHE_KIB` (never lower an app's larger setting)."""
    size = connection.execute("PRAGMA cache_size").fetchone()[0]
    page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    current_kib = -size if size < 0 else size * page_size // 1024
    if current_kib < CACHE_KIB:
        connection.execute(f"PRAGMA cache_size = -{CACHE_KIB}")


_AS_BOOLEAN = {0: False, 1: True}


def _json_column(kind: ColumnKind, values: tuple[Any, ...]) -> tuple[Any, ...]:
    """:func:`to_json` of each value of a column; a BOOLEAN column of integers in one C-level pass."""
    if kind is ColumnKind.BOOLEAN and set(map(type, values)) <= {int, type(None)}:
        return tuple(map(_AS_BOOLEAN.get, values, values))  # 0 and 1 become booleans, the rest stays
    return tuple(map(to_json, repeat(kind), values))


def _value_rows(model: _Model, records: dict[str, SyncRecord]) -> dict[tuple[str, ...], list[Sequence[Any]]]:
    """Each record's values as bound for its table, grouped by the fields it carries."""
    t = model.tracked
    kinds = model.kinds
    groups: dict[tuple[str, ...], list[Sequence[Any]]] = {}
    for key, record in records.items():
        data = record.user_data()
        data[t.key] = key
        names = tuple(name for name in t.fields if name in data)
        unknown = (data.keys() | record.timestamps.keys()) - kinds.keys() - META_FIELDS
        if unknown:
            raise RecordFieldError(f"{t.label} record {key!r}: unknown field(s) {sorted(unknown)[:5]}")
        try:
            groups.setdefault(names, []).append([to_sqlite(kinds[name], data[name]) for name in names])
        except ValueMappingError as exc:
            raise RecordFieldError(f"{t.label} record {key!r}: {exc}") from None
    return groups


_JSON_TYPES = frozenset({str, int, float, bool, list, dict, type(None)})


def _json_types_adapted() -> bool:
    """The app registered an ``sqlite3`` adapter for a type JSON decodes to: a value bound as it is
    would then be stored as the adapter makes it, not as :func:`to_sqlite` maps it."""
    return not _JSON_TYPES.isdisjoint(kind for kind, _protocol in sqlite3.adapters)


def _upsert_sql(t: Tracked, names: Sequence[str]) -> str:
    """Insert a row of the fields ``names`` (the key among them), or update the row with its key."""
    columns = ", ".join(quote(name) for name in names)
    marks = ", ".join("?" for _ in names)
    updates = ", ".join(f"{quote(name)} = excluded.{quote(name)}" for name in names if name != t.key)
    action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    return f"INSERT INTO {t.base} ({columns}) VALUES ({marks}) ON CONFLICT ({t.key_column}) {action}"


def _plain_rows(model: _Model, records: dict[str, SyncRecord]) -> list[Sequence[Any]] | None:
    """The fast path of ``_value_rows``, made with whole-page operations: when every record carries
    exactly the table's fields and its key as identity, in a table whose columns bind JSON scalars
    unchanged (plain or boolean). None: take the record-by-record path. The values are not looked
    at: a scalar binds as :func:`to_sqlite` would map it, and the binding refuses the rest (see
    ``SqliteSyncStorage._upsert_as_bound``)."""
    t = model.tracked
    if not model.plain or _json_types_adapted():
        return None
    fields = model.field_set
    datas = [record.data for record in records.values()]
    stamps = (record.timestamps for record in records.values())
    if not all(map(eq, map(dict.keys, datas), repeat(fields))) or not all(map(le, map(dict.keys, stamps), repeat(fields))):
        return None
    if list(map(itemgetter(t.key), datas)) != list(records):
        return None
    return list(map(itemgetter(*t.fields), datas)) if len(t.fields) > 1 else [(key,) for key in records]


def _shadow_rows(t: Tracked, records: dict[str, SyncRecord], received_at: int) -> list[Sequence[Any]]:
    """(key, last_modified, received_at, one stamp per field) of each record, column by column."""
    maps = [record.timestamps for record in records.values()]
    newest = list(map(max, map(dict.values, maps))) if all(maps) else [max(m.values(), default=0) for m in maps]
    if received_at:
        newest = [max(received_at, stamp) for stamp in newest]
    stamp_columns = [list(map(dict.get, maps, repeat(name))) for name in t.fields]
    return list(zip(records, newest, repeat(received_at), *stamp_columns))


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _record_json(record: SyncRecord | None) -> str | None:
    return None if record is None else json.dumps(record.to_dict(), separators=(",", ":"))


def _migrate_tombstones(connection: sqlite3.Connection, t: Tracked) -> None:
    """Files made before tombstones kept their delete's own stamp and erased row get the columns
    (NULL: the delete's stamp is the tombstone's; nothing kept)."""
    columns = {name for (name,) in connection.execute("SELECT name FROM pragma_table_info(?)", (t.name("tomb"),))}
    for name, kind in (("hlc", "INTEGER"), ("row", "TEXT")):
        if columns and name not in columns:
            connection.execute(f'ALTER TABLE {t.tomb} ADD COLUMN "{name}" {kind}')


def _position(since: int, after: Cursor | None) -> tuple[str, list[Any]]:
    """The WHERE part selecting rows strictly after a checkpoint or a cursor, in (last_modified, key) order."""
    if after is None:
        return f"s.{S_LM} > ?", [since]
    return f"(s.{S_LM}, s.{S_KEY}) > (?, ?)", [after.timestamp, after.key]


def _open(
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

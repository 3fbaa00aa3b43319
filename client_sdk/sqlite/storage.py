"""``SqliteSyncStorage``: the :class:`DatabaseSyncStorage` of a SQLite file.

The app's tables stay ordinary tables; triggers capture every write made to
them, from any connection or process (``ddl.py``), and the change log is folded
into shadow rows and tombstones before sync state is read (``changelog.py``).

This module is the storage's surface: opening (``install.py`` keeps the shadow
objects in step with the schema), the reads and writes both roles make, and
maintenance. It stands on ``core.py`` (the connection, the fold, page reads);
the client role's pending changes are in ``pending.py``, rows become records in
``mapping.py``, and foreign keys are checked in ``references.py``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from operator import itemgetter
from typing import Any

import sqlite_utils

from ..engine.protocols import ReferenceViolation
from ..errors import InvalidParameterError, RecordFieldError, UnknownModelError
from ..protocol.graph import DependencyGraph
from ..protocol.hlc import HybridLogicalClock, system_ms
from ..protocol.wire import RecordError, SyncRecord, record_error
from . import changelog
from .clock import SqliteClockState
from .ddl import (
    GLOBAL_DDL,
    LOG,
    META,
    S_KEY,
    S_LM,
    S_PENDING,
    S_RECEIVED,
    TABLES,
    TOMB_HLC,
    UNLOGGED,
    Tracked,
    storage_ddl,
    trigger_ddl,
)
from .failures import database_path, storage_errors
from .install import check_models, grow_cache, migrate_stamps, migrate_tombstones, open_database
from .kept import adopt_columns, held_records, hold, release, split_unknown, write_kept
from .lock import DEFAULT_STALE_AFTER, SqliteSyncLock
from .mapping import (
    IN_KEYS,
    TableMapping,
    keys_json,
    plain_rows,
    record_json,
    shadow_rows,
    upsert_sql,
    value_rows,
)
from .pending import PendingChanges
from .references import ReferenceChecks
from .schema import PREFIX, TableSchema, introspect, quote
from .serving import ServedChanges
from .transaction import Transactions, serialized
from .values import invalid_values

ROLES = ("client", "server")
DEFAULT_TOMBSTONE_RETENTION = 90 * 24 * 3600.0
"""Seconds a server keeps tombstones by default (see :meth:`SqliteSyncStorage.purge_tombstones`)."""



class SqliteSyncStorage(ServedChanges, PendingChanges):
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
            self.connection, self.db, self._owns_connection = open_database(database)
        self.path = named or database_path(self.connection)
        self._tx = Transactions(self.connection, self.path)
        self._models: dict[str, TableMapping] = {}
        self._labels_by_table: dict[str, str] = {}
        self._references = ReferenceChecks(self.connection, identity_field, self._models, self._labels_by_table)
        self._writes_alone: dict[str, tuple[tuple[int, int], bool]] = {}
        self._schema_version = -1
        self.labels_from_older_sdk: tuple[str, ...] = ()
        """Models this file tracked with an SDK version that refused received fields it had no column for
        (see :meth:`SyncClient.__init__`)."""
        """The file's schema version when the triggers were last brought up to date (``follow_schema``)."""
        """Table -> (schema versions of main and temp, what :meth:`_upsert_writes_alone` found then)."""
        try:
            with storage_errors(self.connection, self.path):
                self._setup(models, node_id)
        except BaseException:
            self.close()
            raise
        self.clock = HybridLogicalClock(SqliteClockState(self.connection, self._tx, self._fold_log))

    # ------------------------------------------------------------------ setup

    def _setup(self, models: Mapping[str, str] | None, node_id: str | None) -> None:
        if not self.connection.in_transaction:
            self.connection.execute("PRAGMA journal_mode = WAL")
            self.connection.execute("PRAGMA foreign_keys = ON")
        grow_cache(self.connection)
        with self._tx():
            for statement in GLOBAL_DDL:
                self.connection.execute(statement)
            self.node_id = self._node_id(node_id)
            registry = changelog.read_registry(self.connection)
            targets = self._fold_targets(registry)
            tables = {name for (name,) in self.connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            self.labels_from_older_sdk = tuple(tracked.label for tracked in targets if tracked.name("kept") not in tables)
            for tracked in targets:
                migrate_tombstones(self.connection, tracked)
                for statement in storage_ddl(tracked, self.role):  # tables a newer version added
                    self.connection.execute(statement)
            changelog.fold(self.connection, targets)  # with the fields the triggers were made for
            if models is None:
                models = {name: tracked.label for name, tracked in registry.items()}
                if not models:
                    raise InvalidParameterError("this database tracks no tables yet: pass models={table: label}")
            check_models(models)
            self._install_all(models, registry)

    def _install_all(self, models: Mapping[str, str], registry: Mapping[str, Tracked]) -> None:
        for table, label in models.items():
            self._install(introspect(self.connection, table, self.identity_field), label, registry.get(table))
        self._schema_version = self._main_schema_version()

    def _main_schema_version(self) -> int:
        version: int = self.connection.execute("PRAGMA main.schema_version").fetchone()[0]
        return version

    @serialized
    def follow_schema(self) -> bool:
        """Bring the triggers and shadow objects up to date if the file's schema changed since they were
        (another connection ran ALTER TABLE, say, or sqlite-utils' ``alter=True`` added a column), as
        reopening would; True if it looked. Cheap when nothing changed: one PRAGMA."""
        if self._main_schema_version() == self._schema_version:
            return False
        with storage_errors(self.connection, self.path), self._tx():
            registry = changelog.read_registry(self.connection)
            changelog.fold(self.connection, self._fold_targets(registry))
            self._install_all({self.table_for(label): label for label in self.labels}, registry)
        return True

    def _node_id(self, given: str | None) -> str:
        row = self.connection.execute(f"SELECT value FROM {META} WHERE name = 'node_id'").fetchone()
        if row is not None:
            if given is not None and given != row[0]:
                raise InvalidParameterError(f"this database belongs to node {row[0]!r}, not {given!r}")
            stored: str = row[0]
            return stored
        node_id = given or str(uuid.uuid4())
        self.connection.execute(f"INSERT INTO {META} (name, value) VALUES ('node_id', ?)", (node_id,))
        return node_id

    def _install(self, schema: TableSchema, label: str, current: Tracked | None) -> None:
        """Create or bring up to date the shadow objects and triggers of one table."""
        if current is not None:
            table_id = current.id
        else:
            table_id = self.connection.execute(f'SELECT coalesce(max("id"), 0) + 1 FROM {TABLES}').fetchone()[0]
        tracked = Tracked(table_id, schema.name, label, schema.key, schema.fields, schema.secondary_unique)
        for statement in storage_ddl(tracked, self.role):
            self.connection.execute(statement)
        migrate_stamps(self.connection, tracked)
        model = TableMapping(tracked, schema)
        added = [name for name in tracked.fields if current is not None and name not in current.fields]
        if added:
            with self._unlogged(tracked, None):
                adopt_columns(self.connection, model, added, changelog.fresh_stamp(self.connection))
        existing = dict(
            self.connection.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ? AND name LIKE ? ESCAPE '\\'",
                (tracked.table, PREFIX.replace("_", "\\_") + "%"),
            ).fetchall()
        )
        capturing = current is not None and existing == trigger_ddl(current)
        expected = trigger_ddl(tracked)
        if existing != expected:
            for name in existing:
                self.connection.execute(f"DROP TRIGGER {quote(name)}")
            for sql in expected.values():
                self.connection.execute(sql)
        self.connection.execute(
            f'INSERT OR REPLACE INTO {TABLES} ("name", "id", "label", "key", "fields", "sweep") VALUES (?, ?, ?, ?, ?, ?)',
            (tracked.table, tracked.id, tracked.label, tracked.key, json.dumps(list(tracked.fields)), int(tracked.sweep)),
        )
        if not capturing:
            # first tracking, or triggers were dropped (a rebuilt table): catch up on what was not logged
            stamp = changelog.fresh_stamp(self.connection)
            changelog.backfill(self.connection, tracked, stamp)
            changelog.sweep_orphans(self.connection, tracked, stamp)
        self._models[label] = model
        self._labels_by_table[tracked.table] = label
        if current is None and self.role == "client":
            self.refetch(label)  # the server may hold rows of it this device skipped while it did not track it

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
        """The table's column names."""
        return frozenset(self._model(label).tracked.fields)

    @property
    def keeps_unknown_fields(self) -> bool:
        """A client keeps received fields its table has no column for (``kept.py``); a server refuses them."""
        return self.role == "client"

    @serialized
    def stamp_aliases(self, label: str) -> dict[str, str]:
        return self._model(label).stamp_aliases

    def invalid_values(self, label: str, records: Mapping[str, SyncRecord]) -> dict[str, str]:
        """Records holding a value its column cannot take as sent: key -> each such field, with what
        its column takes (see :func:`values.invalid_values`)."""
        return invalid_values(self._model(label).value_rules, records)

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

    @contextmanager
    def failing_on_locks(self) -> Iterator[None]:
        """Within the block, a write lock held by another connection fails the statement at once
        (:class:`DatabaseLockedError`) instead of waiting for it, e.g. on an event loop."""
        waited = self.connection.execute("PRAGMA busy_timeout").fetchone()[0]
        self.connection.execute("PRAGMA busy_timeout = 0")
        try:
            yield
        finally:
            self.connection.execute(f"PRAGMA busy_timeout = {int(waited)}")

    def close(self) -> None:
        """Close the connection if this storage opened it."""
        if self._owns_connection:
            self.connection.close()

    # ------------------------------------------------------------------ reading changes

    @serialized
    def get_records(self, label: str, keys: Iterable[str]) -> dict[str, SyncRecord]:
        model = self._model(label)
        self._fold_log()
        return self._read_records(model, keys_json(keys))

    def _read_records(self, model: TableMapping, keys: str) -> dict[str, SyncRecord]:
        rows = self._fetch_all(f"{model.select} WHERE s.{S_KEY} IN {IN_KEYS}", (keys,))
        return dict(self._with_kept(model, model.records(rows)))

    @serialized
    def reference_violations(
        self, written: Mapping[str, Collection[str]], deleted: Mapping[str, Collection[str]]
    ) -> list[ReferenceViolation]:
        """FOREIGN KEYs left pointing at nothing by a round, inside its transaction (see :class:`ReferenceChecks`)."""
        return self._references.violations(written, deleted)

    @serialized
    def get_tombstones(self, label: str, keys: Iterable[str]) -> dict[str, int]:
        tracked = self._model(label).tracked
        self._fold_log()
        return self._tombstone_stamps(tracked, keys_json(keys))

    def _tombstone_stamps(self, tracked: Tracked, keys: str) -> dict[str, int]:
        """key -> the delete's own stamp, for the tombstones among ``keys`` (a JSON array)."""
        rows = self.connection.execute(f'SELECT "key", {TOMB_HLC} FROM {tracked.tomb} WHERE "key" IN {IN_KEYS}', (keys,))
        return dict(rows)

    def _stored_stamps(self, tracked: Tracked, keys: str) -> dict[str, int]:
        """key -> last_modified, for the rows stored among ``keys`` (a JSON array)."""
        rows = self.connection.execute(f"SELECT {S_KEY}, {S_LM} FROM {tracked.shadow} WHERE {S_KEY} IN {IN_KEYS}", (keys,))
        return dict(rows)

    # ------------------------------------------------------------------ writing what sync decided

    @serialized
    def upsert_many(
        self, label: str, records: dict[str, SyncRecord], *, received_at: int | None = None, guard: bool = True
    ) -> list[str]:
        model = self._model(label)
        tracked = model.tracked
        with self._tx.write():
            self._fold_log()
            if not records:
                return []
            skipped = self._stale(tracked, records) if guard else []
            stale = set(skipped)
            accepted = {key: record for key, record in records.items() if key not in stale} if stale else records
            if stale:  # a newer version is stored: nothing older is held back for these keys any more
                release(self.connection, tracked, stale)
            if accepted:
                skipped += self._write_rows(model, accepted, received_at or 0)
            return skipped

    def _stale(self, tracked: Tracked, records: dict[str, SyncRecord]) -> list[str]:
        """Keys of ``records`` older than the row or tombstone stored here (the staleness guard, 7.6)."""
        keys = keys_json(records)
        stored, tombs = self._stored_stamps(tracked, keys), self._tombstone_stamps(tracked, keys)
        return [
            key for key, record in records.items()
            if (stored[key] if key in stored else tombs.get(key, -1)) > record.last_modified
        ]

    def _write_rows(self, model: TableMapping, records: dict[str, SyncRecord], received_at: int) -> list[str]:
        """Store ``records``; return the keys of those the table refused, held back (a client's only)."""
        tracked = model.tracked
        received = records
        records, kept = split_unknown(model, records)
        if kept and self.role == "server":  # the engine refuses them first (PROTOCOL.md 7)
            key, (fields, _stamps) = next(iter(kept.items()))
            raise RecordFieldError(f"{tracked.label} record {key!r}: unknown field(s) {sorted(fields)[:5]}")
        refused: dict[str, str] = {}
        self.connection.execute("PRAGMA defer_foreign_keys = ON")  # a page may hold children before parents
        with self._unlogged(tracked, None if self._upsert_writes_alone(model) else keys_json(records)):
            try:
                plain = plain_rows(model, records)
                if plain is None or not self._upsert_as_bound(tracked, plain):
                    plain = None
                    for names, rows in value_rows(model, records).items():
                        self.connection.executemany(upsert_sql(tracked, names), rows)
            except sqlite3.IntegrityError:
                if self.role != "client":
                    raise
                plain = None
                refused = self._write_one_by_one(model, records)
        if refused:
            hold(self.connection, tracked, {key: (received[key], reason) for key, reason in refused.items()})
            records = {key: record for key, record in records.items() if key not in refused}
            kept = {key: fields for key, fields in kept.items() if key not in refused}
            if not records:
                return list(refused)
        release(self.connection, tracked, records)
        write_kept(self.connection, tracked, records, kept)
        self._references.note(model, plain)
        stamp_rows = shadow_rows(tracked, records, received_at)
        stamp_columns = ", ".join(quote(name) for name in tracked.fields)
        marks = ", ".join("?" for _ in range(3 + len(tracked.fields)))
        self.connection.executemany(
            f"INSERT OR REPLACE INTO {tracked.shadow} ({S_KEY}, {S_LM}, {S_RECEIVED}, {stamp_columns}, {S_PENDING}) "
            f"VALUES ({marks}, 0)",
            stamp_rows,
        )
        if self.connection.execute(f"SELECT EXISTS (SELECT 1 FROM {tracked.tomb})").fetchone()[0]:  # none on a first sync
            self.connection.execute(f'DELETE FROM {tracked.tomb} WHERE "key" IN {IN_KEYS}', (keys_json(records),))
        changelog.write_clock(self.connection, max(map(itemgetter(1), stamp_rows)))
        return list(refused)

    def _write_one_by_one(self, model: TableMapping, records: dict[str, SyncRecord]) -> dict[str, str]:
        """Upsert record by record after the table refused one of a page: key -> SQLite's reason for
        each it refuses (a failed statement undoes only itself; rows written before are written again)."""
        refused = {}
        for key, record in records.items():
            for names, rows in value_rows(model, {key: record}).items():
                try:
                    self.connection.execute(upsert_sql(model.tracked, names), rows[0])
                except sqlite3.IntegrityError as exc:
                    refused[key] = str(exc)
        return refused

    @contextmanager
    def _unlogged(self, tracked: Tracked, keys: str | None) -> Iterator[None]:
        """Keep the capture triggers from logging the block's writes to the rows ``keys`` (a JSON array)
        or, with None, to any row of the table. (A block that raises fails the transaction, which
        takes the mark away with it.)"""
        if keys is None:  # '' starts before every key (keys compare as text)
            self.connection.execute(f'INSERT INTO {UNLOGGED} ("tbl", "key", "through") VALUES (?, \'\', NULL)', (tracked.id,))
        else:
            self.connection.execute(
                f'INSERT OR IGNORE INTO {UNLOGGED} ("tbl", "key", "through") SELECT ?, value, value FROM json_each(?)',
                (tracked.id, keys),
            )
        yield
        self.connection.execute(f'DELETE FROM {UNLOGGED} WHERE "tbl" = ?', (tracked.id,))

    def _upsert_writes_alone(self, model: TableMapping) -> bool:
        """Whether upserting rows of the table can write no other row: no trigger of the app's is on
        it (TEMP ones included), and it has no secondary UNIQUE constraint. (Without one, an upsert,
        which never changes a row's key, changes no column a FOREIGN KEY can refer to, so no foreign
        key action fires; and no REPLACE can delete another row.) Then every write to the table while
        a page is upserted is the page's own. Read again whenever the schema changed."""
        tracked = model.tracked
        version = (self.connection.execute("PRAGMA main.schema_version").fetchone()[0],
                   self.connection.execute("PRAGMA temp.schema_version").fetchone()[0])
        known = self._writes_alone.get(tracked.table)
        if known is not None and known[0] == version:
            return known[1]
        triggers = self.connection.execute(
            "SELECT EXISTS (SELECT 1 FROM (SELECT * FROM sqlite_master UNION ALL SELECT * FROM sqlite_temp_master) "
            "WHERE type = 'trigger' AND tbl_name = ? COLLATE NOCASE AND name NOT GLOB ?)",
            (tracked.table, f"{PREFIX}*"),
        ).fetchone()[0]
        alone = not triggers and not tracked.sweep
        self._writes_alone[tracked.table] = (version, alone)
        return alone

    def _upsert_as_bound(self, tracked: Tracked, rows: list[Sequence[Any]]) -> bool:
        """Upsert rows whose values bind as they are; False if the binding refuses one (a list, an
        object, an integer past 64 bits). The rows before that one are written then, with the very
        values the record-by-record path binds for them (it converts only what does not bind), so
        writing the page again that way repeats them harmlessly; no savepoint is taken for it (see
        :meth:`Transactions.write`)."""
        try:
            self.connection.executemany(upsert_sql(tracked, tracked.fields), rows)
        except (OverflowError, sqlite3.ProgrammingError):
            return False
        return True

    @serialized
    def delete_many(
        self, label: str, deletes: dict[str, int], *, received_at: int | None = None, guard: bool = True
    ) -> list[str]:
        model = self._model(label)
        tracked = model.tracked
        with self._tx.write():
            self._fold_log()
            if not deletes:
                return []
            stored = self._stored_stamps(tracked, keys_json(deletes))
            skipped = [key for key, stamp in deletes.items() if guard and stored.get(key, -1) > stamp]
            accepted = {key: stamp for key, stamp in deletes.items() if key not in skipped}
            if accepted:
                keys = keys_json(accepted)
                erased = {} if received_at is None else self._read_records(model, keys)
                # ON DELETE actions still fire other rows' triggers: those rows become local changes.
                # A child left dangling is found before the round commits (reference_violations).
                self.connection.execute("PRAGMA defer_foreign_keys = ON")
                with self._unlogged(tracked, keys):
                    self.connection.execute(f"DELETE FROM {tracked.base} WHERE {tracked.key_column} IN {IN_KEYS}", (keys,))
                self.connection.execute(f"DELETE FROM {tracked.shadow} WHERE {S_KEY} IN {IN_KEYS}", (keys,))
                write_kept(self.connection, tracked, accepted, {})
                release(self.connection, tracked, accepted)
                # with received_at, the tombstone is delivered from then on, keeps the delete's own
                # stamp and what it erased
                rows = [(key, own if received_at is None else received_at, None if received_at is None else own,
                         record_json(erased.get(key))) for key, own in accepted.items()]
                self.connection.executemany(
                    f'INSERT INTO {tracked.tomb} ("key", "stamp", "hlc", "row", "pending") VALUES (?, ?, ?, ?, 0) '
                    'ON CONFLICT ("key") DO UPDATE SET "stamp" = max("stamp", excluded."stamp"), '
                    f'"hlc" = CASE WHEN excluded."hlc" IS NULL THEN NULL ELSE max({TOMB_HLC}, excluded."hlc") END, '
                    '"row" = coalesce(excluded."row", "row"), "pending" = 0',
                    rows,
                )
                changelog.write_clock(self.connection, max(*accepted.values(), received_at or 0))
            return skipped

    # ------------------------------------------------------------------ what cannot be stored yet

    @serialized
    def hold(self, label: str, records: Mapping[str, tuple[SyncRecord, str]]) -> None:
        """Hold back received ``records`` (key -> (record, why)) until they can be stored (see ``kept.py``)."""
        tracked = self._model(label).tracked
        with self._tx.write():
            hold(self.connection, tracked, records)

    @serialized
    def held_records(self, label: str) -> dict[str, SyncRecord]:
        return {key: record for key, (record, _reason) in held_records(self.connection, self._model(label).tracked).items()}

    @serialized
    def held_back(self) -> list[RecordError]:
        """Every received record held back because this database cannot store it yet, with why."""
        return [record_error(label, key, reason)
                for label, model in self._models.items()
                for key, (_record, reason) in held_records(self.connection, model.tracked).items()]

    # ------------------------------------------------------------------ maintenance

    @serialized
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
            self._fold_log()
            for model in self._models.values():
                purged += self.connection.execute(f"DELETE FROM {model.tracked.tomb} WHERE {where}", params).rowcount
        return purged

    @serialized
    def untrack(self, table: str) -> None:
        """Stop tracking ``table``: remove its triggers, shadow and tombstone tables and log entries."""
        with self._tx():
            self._fold_log()
            registry = changelog.read_registry(self.connection)
            if table not in registry:
                raise UnknownModelError(f"table {table!r} is not tracked")
            tracked = registry[table]
            triggers = self.connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ? AND name LIKE ? ESCAPE '\\'",
                (table, PREFIX.replace("_", "\\_") + "%"),
            ).fetchall()
            for (name,) in triggers:
                self.connection.execute(f"DROP TRIGGER {quote(name)}")
            for kind, name in tracked.object_names():
                self.connection.execute(f"DROP {kind.upper()} IF EXISTS {quote(name)}")
            self.connection.execute(f'DELETE FROM {LOG} WHERE "tbl" = ?', (tracked.id,))
            self.connection.execute(f'DELETE FROM {TABLES} WHERE "name" = ?', (table,))
        label = self._labels_by_table.pop(table, None)
        if label is not None:
            del self._models[label]





"""``SqliteSyncStorage``: the :class:`DatabaseSyncStorage` of a SQLite file.

The app's tables stay ordinary tables; triggers capture every write made to
them, from any connection or process (``ddl.py``), and the change log is folded
into shadow rows and tombstones before sync state is read (``changelog.py``).

This module is the storage's surface: opening (``install.py`` keeps the shadow
objects in step with the schema), the reads both roles make, and maintenance.
It stands on ``core.py`` (the connection, the fold, page reads); sync's writes
are in ``writes.py`` (what a client cannot store yet in ``kept.py``), the client
role's pending changes in ``pending.py``, the server role's reads in
``serving.py``; rows become records in ``mapping.py``, and foreign keys are
checked in ``references.py``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

import sqlite_utils

from ..engine.protocols import ReferenceViolation
from ..errors import InvalidParameterError, UnknownModelError
from ..protocol.graph import DependencyGraph
from ..protocol.hlc import HybridLogicalClock, system_ms
from ..protocol.wire import SyncRecord
from . import changelog
from .clock import SqliteClockState
from .ddl import (
    GLOBAL_DDL,
    LOG,
    META,
    TABLES,
    Tracked,
    storage_ddl,
    trigger_ddl,
)
from .failures import database_path, storage_errors
from .install import check_models, grow_cache, migrate_stamps, migrate_tombstones, open_database
from .kept import adopt_columns
from .lock import DEFAULT_STALE_AFTER, SqliteSyncLock
from .mapping import (
    TableMapping,
    keys_json,
)
from .pending import PendingChanges
from .references import ReferenceChecks
from .schema import PREFIX, TableSchema, introspect, quote
from .scopes import SQLITE, ScopedReads, compile_scopes
from .serving import ServedChanges
from .transaction import Transactions, serialized
from .values import invalid_values
from .writes import SyncWrites

ROLES = ("client", "server")
DEFAULT_TOMBSTONE_RETENTION = 90 * 24 * 3600.0
"""Seconds a server keeps tombstones by default (see :meth:`SqliteSyncStorage.purge_tombstones`)."""



class SqliteSyncStorage(SyncWrites, ServedChanges, PendingChanges):
    """Sync state for the tables of one SQLite database.

    ``database``: a path, an ``sqlite3.Connection`` or a ``sqlite_utils.Database``.
    ``models``: table name -> model label (``{"tasks": "todo.Task"}``); ``None``
    reopens the tables already tracked in the file. Opening installs (or, after
    a schema change, re-installs) the triggers and shadow objects, all named
    with the ``_sync_`` prefix, in the same file. ``role`` is ``"client"``
    (tracks what is pending) or ``"server"`` (serves changes since a checkpoint).
    ``node_id`` names a new database's node (default: a random UUID); the id is
    stored in the file, and reopening with a different one is refused.
    ``scopes`` (a server's): table -> SQL condition giving a user their rows of
    it, ``:user`` bound to the user a request is answered for (``scoped_to``);
    see ``scopes.py``.

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
        scopes: Mapping[str, str] | None = None,
    ) -> None:
        if role not in ROLES:
            raise InvalidParameterError(f"role must be one of {ROLES}, got {role!r}")
        if not isinstance(identity_field, str) or not identity_field:
            raise InvalidParameterError("identity_field must be a non-empty string")
        if node_id is not None and (not isinstance(node_id, str) or not node_id):
            raise InvalidParameterError("node_id must be a non-empty string")
        if scopes and role != "server":
            raise InvalidParameterError("scopes are a server's: they pick the rows each user's devices see")
        if scopes is not None and not isinstance(scopes, Mapping):
            raise InvalidParameterError("scopes must map table -> SQL condition")
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
        self._notes = {}
        self._schema_version = -1
        """The file's schema version when the triggers were last brought up to date (``follow_schema``)."""
        self.labels_from_older_sdk: tuple[str, ...] = ()
        """Models this file tracked with an SDK version that refused received fields it had no column for
        (see :meth:`SyncClient.__init__`)."""
        self._scoped = None
        try:
            with storage_errors(self.connection, self.path):
                self._setup(models, node_id)
                if scopes:
                    with self._tx():
                        for statement in SQLITE.ddl:
                            self.connection.execute(statement)
                    self._scoped = ScopedReads(self.connection, compile_scopes(self.connection, self._models, scopes))
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

    @serialized
    def reference_violations(
        self, written: Mapping[str, Collection[str]], deleted: Mapping[str, Collection[str]]
    ) -> list[ReferenceViolation]:
        """FOREIGN KEYs left pointing at nothing by a round, inside its transaction (see :class:`ReferenceChecks`)."""
        return self._references.violations(written, deleted)

    @serialized
    def referrers(self, label: str, keys: Collection[str], *, pending: bool) -> list[ReferenceViolation]:
        """Rows referring to the stored rows ``keys`` of ``label``, only pending ones if ``pending``
        (see :meth:`ReferenceChecks.referrers`)."""
        self._model(label)
        self._fold_log()
        return self._references.referrers(label, keys, pending=pending)

    @serialized
    def get_tombstones(self, label: str, keys: Iterable[str]) -> dict[str, int]:
        tracked = self._model(label).tracked
        self._fold_log()
        return self._tombstone_stamps(tracked, keys_json(keys))

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





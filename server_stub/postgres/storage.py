"""``PostgresServerStorage``: a server's storage on PostgreSQL, shared by any number of server processes.

Beside the app's tables live ``_sync_meta`` (the node id), ``_sync_clock`` (the
server's HLC, one row) and, per synced table, ``_sync_shadow_<table>`` (each
row's field stamps, last_modified and received_at) and ``_sync_tomb_<table>``
(tombstones, with the row each delete erased). Sync is the only writer these
tables know of: unlike a SQLite file, whose triggers capture any writer, rows
written to the app's tables by other means are not tracked.

**Several processes, one database.** A pull answers with the server's clock as
its checkpoint, which promises the client every row stamped at or before it. With
concurrent transactions that promise can break: a round that took stamp 10 and
commits late is invisible to a pull that ran meanwhile and answered with
checkpoint 12, so the client never asks for stamp 10 again (the visibility gap).
Here every round that writes holds a transaction-scoped advisory lock in
exclusive mode and every round that only reads holds it shared: a pull never runs
while a write is in flight, writes commit in stamp order, and the HLC row is only
moved under the exclusive lock, so it stays monotonic across processes. Pulls
still run side by side; writes queue, as they do on one SQLite file.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from itertools import groupby
from typing import Any

from client_sdk.engine.protocols import Cursor, ReferenceViolation
from client_sdk.errors import DatabaseLockedError, InvalidParameterError, RecordFieldError, StorageError, UnknownModelError
from client_sdk.protocol.graph import DependencyGraph
from client_sdk.protocol.hlc import HLC_MAX, HybridLogicalClock, system_ms
from client_sdk.protocol.wire import META_FIELDS, SyncRecord
from client_sdk.sqlite.schema import quote
from client_sdk.sqlite.scopes import AnswersForUsers, ScopedReads, ScopedTable
from client_sdk.sqlite.served import served_records
from client_sdk.sqlite.storage import DEFAULT_TOMBSTONE_RETENTION
from client_sdk.sqlite.values import invalid_values

from .catalog import Table, as_text, find_table, json_number, json_text, read_table
from .connection import Connection, connect, shown, storage_errors
from .schema import create_schema
from .scopes import POSTGRES, compile_scopes

LOCK_KEY = 0x5F73796E63
"""The advisory lock every round takes (see the module's doc)."""
_NAME_MAX = 63
"""PostgreSQL truncates longer identifiers."""

_GLOBAL_DDL = (
    'CREATE TABLE IF NOT EXISTS "_sync_meta" ("name" TEXT PRIMARY KEY, "value" TEXT NOT NULL)',
    'CREATE TABLE IF NOT EXISTS "_sync_clock" ("id" INTEGER PRIMARY KEY CHECK ("id" = 0), "last" BIGINT NOT NULL)',
    'INSERT INTO "_sync_clock" ("id", "last") VALUES (0, 0) ON CONFLICT DO NOTHING',
)


class _Synced:
    """One synced table: its catalog entry and the SQL sync runs on it."""

    def __init__(self, label: str, table: Table) -> None:
        self.label = label
        self.table = table
        self.base = quote(table.name)
        self.shadow = quote(f"_sync_shadow_{table.name}")
        self.tomb = quote(f"_sync_tomb_{table.name}")
        self.key = quote(table.key)
        self.joined = f'b.{self.key} = s."key"'
        self.select_values = ", ".join(f"b.{quote(name)}" for name in table.fields)
        self.select = (f'SELECT s."key", s."received_at", s."stamps", {self.select_values} FROM {self.shadow} AS s '
                       f"JOIN {self.base} AS b ON {self.joined}")

    def scoped(self, condition: str) -> ScopedTable:
        """The table as the scoped reads name it, under ``condition``."""
        return ScopedTable(self.label, condition, self.base, self.key, self.shadow, '"key"', '"lm"', '"received_at"', self.tomb,
                           'coalesce("hlc", "stamp")', f's."stamps", {self.select_values}')

    def ddl(self) -> list[str]:
        return [
            f'CREATE TABLE IF NOT EXISTS {self.shadow} ("key" TEXT COLLATE "C" PRIMARY KEY, "lm" BIGINT NOT NULL, '
            '"received_at" BIGINT NOT NULL, "stamps" JSONB NOT NULL)',
            f'CREATE INDEX IF NOT EXISTS {quote(f"_sync_lm_{self.table.name}")} ON {self.shadow} ("lm", "key")',
            f'CREATE TABLE IF NOT EXISTS {self.tomb} ("key" TEXT COLLATE "C" PRIMARY KEY, "stamp" BIGINT NOT NULL, '
            '"hlc" BIGINT, "row" JSONB)',
            f'CREATE INDEX IF NOT EXISTS {quote(f"_sync_stamp_{self.table.name}")} ON {self.tomb} ("stamp")',
        ]

    def records(self, rows: Sequence[Sequence[Any]], *, served: bool = False) -> list[tuple[str, SyncRecord]]:
        """Rows of :attr:`select` as records; ``served``: with their wire text made a page at a time."""
        fields = self.table.fields
        decimals = self.table.decimal_columns
        value_rows = [row[3:] for row in rows]
        if decimals:
            value_rows = [tuple(json_number(value) if index in decimals and value is not None else value
                                for index, value in enumerate(values)) for values in value_rows]
        keys = [row[0] for row in rows]
        if served and rows:
            stamp_columns = [[row[2].get(name) for row in rows] for name in fields]
            value_columns = list(zip(*value_rows, strict=True))
            made = served_records(fields, value_columns, stamp_columns, [row[1] for row in rows], keys)
            if made is not None:
                return list(zip(keys, made, strict=True))
        return [(row[0], SyncRecord(row[0], dict(zip(fields, values, strict=True)), dict(row[2]), row[1]))
                for row, values in zip(rows, value_rows, strict=True)]


class _ClockState:
    """The server's HLC in ``_sync_clock``, shared by every process on the database."""

    def __init__(self, storage: PostgresServerStorage) -> None:
        self._storage = storage

    def read(self) -> int:
        return self._storage._read_clock()

    def advance(self, step: Any) -> int:
        return self._storage._advance_clock(step)


class PostgresServerStorage(AnswersForUsers):
    """The :class:`~client_sdk.engine.protocols.ServerStorage` of a PostgreSQL database (``url``), syncing
    ``models`` (table -> model label); ``schema`` (SQL) creates their tables in a database that has none of
    them yet. ``scopes``: table -> SQL condition giving a user their rows (``:user``), as for SQLite; see
    the module's doc."""

    keeps_unknown_fields = False

    def __init__(
        self,
        url: str,
        models: Mapping[str, str],
        *,
        node_id: str | None = None,
        identity_field: str = "id",
        scopes: Mapping[str, str] | None = None,
        schema: str = "",
    ) -> None:
        self.url = url
        self.path = shown(url)
        self.connection: Connection = connect(url)
        self._guard = threading.RLock()
        self._depth = 0
        self._reading = False
        self._fail_fast = False
        self._synced: dict[str, _Synced] = {}
        self._scoped: ScopedReads | None = None
        self._user: str | None = None
        try:
            self._setup(models, node_id, identity_field, schema)
            if scopes:
                self._scoped = self._scopes(scopes)
        except BaseException:
            self.connection.close()
            raise
        self.clock = HybridLogicalClock(_ClockState(self))

    def _setup(self, models: Mapping[str, str], node_id: str | None, identity_field: str, schema: str) -> None:
        with self.transaction():  # the round lock: processes starting together take turns
            create_schema(self.connection, schema, models)
            for statement in _GLOBAL_DDL:
                self.connection.execute(statement)
            self.node_id = self._node_id(node_id)
            for table, label in models.items():
                name = find_table(self.connection, table)
                if name is None:
                    raise InvalidParameterError(f"models.{table}: the database has no table {table!r}")
                if len(f"_sync_shadow_{name}".encode()) > _NAME_MAX:
                    raise InvalidParameterError(f"table {name!r}: too long a name for sync's tables beside it "
                                                "(PostgreSQL keeps 63 bytes of a name)")
                synced = _Synced(label, read_table(self.connection, name, identity_field))
                for statement in synced.ddl():
                    self.connection.execute(statement)
                self._synced[label] = synced
            self._defer_references()

    def _scopes(self, conditions: Mapping[str, str]) -> ScopedReads:
        """The scoped reads of ``conditions`` (table -> SQL condition), compiled."""
        by_table = {synced.table.name: synced for synced in self._synced.values()}
        by_label = {}
        for table, condition in conditions.items():
            synced = by_table.get(find_table(self.connection, table) or "")
            if synced is None:
                synced_tables = ", ".join(sorted(by_table))
                raise InvalidParameterError(f"scopes.{table}: not a synced table (the synced tables: {synced_tables})")
            by_label[synced.label] = synced.scoped(condition)
        with self.transaction():
            for statement in POSTGRES.ddl:
                self.connection.execute(statement.encode())
        compile_scopes(self.connection, by_label)
        return ScopedReads(self.connection, by_label, POSTGRES)

    def _defer_references(self) -> None:
        """Make the foreign keys among synced tables checkable at commit: a round stores a page's rows in
        dependency order, but refuses a broken reference per key (``reference_violations``) before it
        commits. ON DELETE actions would change rows sync does not see: refused, naming the constraint."""
        tables = {synced.table.name for synced in self._synced.values()}
        for synced in self._synced.values():
            for fk in synced.table.foreign_keys:
                if fk.parent_table not in tables:
                    continue
                if fk.on_delete not in ("a", "r"):
                    raise InvalidParameterError(
                        f"table {synced.table.name!r}: foreign key {fk.name!r} has an ON DELETE action, which changes rows "
                        "without sync seeing it; on PostgreSQL sync needs NO ACTION or RESTRICT"
                    )
                if not fk.deferrable:
                    self.connection.execute(f"ALTER TABLE {synced.base} ALTER CONSTRAINT {quote(fk.name)} DEFERRABLE")

    def _node_id(self, given: str | None) -> str:
        row = self.connection.execute("SELECT \"value\" FROM \"_sync_meta\" WHERE \"name\" = 'node_id'").fetchone()
        if row is not None:
            if given is not None and given != row[0]:
                raise InvalidParameterError(f"this database belongs to node {row[0]!r}, not {given!r}")
            stored: str = row[0]
            return stored
        node_id = given or str(uuid.uuid4())
        self.connection.execute("INSERT INTO \"_sync_meta\" (\"name\", \"value\") VALUES ('node_id', %s)", (node_id,))
        return node_id

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction holding the round lock (shared inside :meth:`reading`); nested calls are savepoints."""
        with self._guard, storage_errors(self.url):
            if self._depth:
                self._depth += 1
                try:
                    with self.connection.transaction():
                        yield
                finally:
                    self._depth -= 1
                return
            if self.connection.broken or self.connection.closed:  # the database restarted, or a proxy dropped us
                self._reconnect()
            with self.connection.transaction():
                self._take_round_lock()
                self.connection.execute("SET CONSTRAINTS ALL DEFERRED")
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0

    def _write(self) -> AbstractContextManager[None]:
        """A transaction of its own for a write made outside one, else part of the one open."""
        return nullcontext() if self._depth else self.transaction()

    def _reconnect(self) -> None:
        """A new connection for a lost one (the request that found it lost has failed already)."""
        self.connection.close()
        try:
            self.connection = connect(self.url)
        except InvalidParameterError as exc:  # still unreachable: this request fails too, the next one tries again
            raise StorageError(str(exc), path=self.path) from None
        if self._scoped is not None:
            self._scoped.connection = self.connection

    def _take_round_lock(self) -> None:
        mode = "_shared" if self._reading else ""
        if not self._fail_fast:
            self.connection.execute(f"SELECT pg_advisory_xact_lock{mode}(%s)", (LOCK_KEY,))
            return
        row = self.connection.execute(f"SELECT pg_try_advisory_xact_lock{mode}(%s)", (LOCK_KEY,)).fetchone()
        if row is None or not row[0]:
            raise DatabaseLockedError(f"database {self.path}: another server process is writing", path=self.path)

    @contextmanager
    def reading(self) -> Iterator[None]:
        """The block's rounds only read (a pull): they run beside other reads, never beside a write."""
        self._reading = True
        try:
            yield
        finally:
            self._reading = False

    @contextmanager
    def failing_on_locks(self) -> Iterator[None]:
        """Within the block, a round lock held by another process fails at once (:class:`DatabaseLockedError`)."""
        self._fail_fast = True
        try:
            yield
        finally:
            self._fail_fast = False

    def close(self) -> None:
        self.connection.close()

    # ------------------------------------------------------------------ the clock

    def _read_clock(self) -> int:
        with self._guard, storage_errors(self.url):
            row = self.connection.execute('SELECT "last" FROM "_sync_clock" WHERE "id" = 0').fetchone()
            return int(row[0]) if row is not None else 0

    def _advance_clock(self, step: Any) -> int:
        with self.transaction():
            row = self.connection.execute('SELECT "last" FROM "_sync_clock" WHERE "id" = 0 FOR UPDATE').fetchone()
            stamp: int = step(0 if row is None else int(row[0]))
            self.connection.execute('UPDATE "_sync_clock" SET "last" = %s WHERE "id" = 0', (stamp,))
            return stamp

    def _clock_at_least(self, stamp: int) -> None:
        self.connection.execute('UPDATE "_sync_clock" SET "last" = greatest("last", %s) WHERE "id" = 0', (stamp,))

    # ------------------------------------------------------------------ names and rules

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self._synced)

    def _model(self, label: str) -> _Synced:
        try:
            return self._synced[label]
        except KeyError:
            raise UnknownModelError(f"unknown model label {label!r}") from None

    def fields(self, label: str) -> frozenset[str]:
        return frozenset(self._model(label).table.fields)

    def stamp_aliases(self, label: str) -> dict[str, str]:
        return self._model(label).table.stamp_aliases

    def invalid_values(self, label: str, records: Mapping[str, SyncRecord]) -> dict[str, str]:
        """Records holding a value its column cannot take: key -> what is wrong, naming the fields."""
        problems = invalid_values(self._model(label).table.value_rules, records)
        for key, record in records.items():
            if key not in problems and (_holds_nul(key) or _holds_nul(record.data)):
                problems[key] = "PostgreSQL text cannot hold a NUL character (\\u0000), in the key or a value"
        return problems

    def dependency_graph(self) -> DependencyGraph:
        """Parents before children, from the foreign keys among synced tables (self-references ignored)."""
        by_table = {synced.table.name: label for label, synced in self._synced.items()}
        return DependencyGraph({
            label: {by_table[fk.parent_table] for fk in synced.table.foreign_keys
                    if fk.parent_table in by_table and fk.parent_table != synced.table.name}
            for label, synced in self._synced.items()
        })

    # ------------------------------------------------------------------ reading

    def _fetch(self, sql: str | bytes, params: Sequence[Any] | Mapping[str, Any]) -> list[tuple[Any, ...]]:
        with self._guard, storage_errors(self.url):
            return self.connection.execute(sql, params).fetchall()

    def get_records(self, label: str, keys: Iterable[str]) -> dict[str, SyncRecord]:
        synced = self._model(label)
        return dict(synced.records(self._fetch(f'{synced.select} WHERE s."key" = ANY(%s)', (_storable(keys),))))

    def get_tombstones(self, label: str, keys: Iterable[str]) -> dict[str, int]:
        synced = self._model(label)
        rows = self._fetch(f'SELECT "key", coalesce("hlc", "stamp") FROM {synced.tomb} WHERE "key" = ANY(%s)', (_storable(keys),))
        return dict(rows)

    def _stored_stamps(self, synced: _Synced, keys: list[str]) -> dict[str, int]:
        return dict(self._fetch(f'SELECT "key", "lm" FROM {synced.shadow} WHERE "key" = ANY(%s)', (_storable(keys),)))

    def get_changed_since(
        self, label: str, since: int, *, after: Cursor | None = None, limit: int | None = None,
        until: int | None = None,
    ) -> list[tuple[str, SyncRecord]]:
        synced = self._model(label)
        scoped = self._scope_of(label)
        if scoped is not None:
            reads, user = scoped
            sql, named = reads.page(label, user, since, None if after is None else (after.timestamp, after.key), limit, until)
            return synced.records(self._fetch(sql, named), served=True)
        params: list[Any]
        if after is None:
            where, params = 's."lm" > %s', [since]
        else:
            where, params = '(s."lm", s."key") > (%s, %s)', [after.timestamp, after.key]
        if until is not None:
            where, params = f'{where} AND s."lm" <= %s', [*params, until]
        rows = self._fetch(f'{synced.select} WHERE {where} ORDER BY s."lm", s."key" LIMIT %s', [*params, limit])
        return synced.records(rows, served=True)

    def get_deletes_since(self, label: str, since: int, *, until: int | None = None) -> dict[str, int]:
        synced = self._model(label)
        scoped = self._scope_of(label)
        if scoped is not None:
            with self._guard, storage_errors(self.url):
                return scoped[0].gone_since(label, scoped[1], since, until)
        rows = self._fetch(f'SELECT "key", coalesce("hlc", "stamp") FROM {synced.tomb} WHERE "stamp" > %s AND "stamp" <= %s',
                           (since, HLC_MAX if until is None else until))
        return dict(rows)

    def get_buried(self, label: str, keys: Iterable[str]) -> dict[str, SyncRecord]:
        synced = self._model(label)
        rows = self._fetch(f'SELECT "key", "row" FROM {synced.tomb} WHERE "row" IS NOT NULL AND "key" = ANY(%s)',
                           (_storable(keys),))
        return {key: SyncRecord.from_dict(key, row, label=label) for key, row in rows}

    def keep_buried(self, label: str, records: dict[str, SyncRecord]) -> None:
        synced = self._model(label)
        with self._guard, self._write(), storage_errors(self.url), self.connection.cursor() as cursor:
            cursor.executemany(f'UPDATE {synced.tomb} SET "row" = %s WHERE "key" = %s',
                               [(_jsonb(record.to_dict()), key) for key, record in records.items()])

    # ------------------------------------------------------------------ writing

    def upsert_many(
        self, label: str, records: dict[str, SyncRecord], *, received_at: int | None = None, guard: bool = True
    ) -> list[str]:
        synced = self._model(label)
        with self._guard, self._write(), storage_errors(self.url):
            if not records:
                return []
            fields = set(synced.table.fields)
            for key, record in records.items():
                unknown = record.data.keys() - fields - META_FIELDS
                if unknown:  # the engine refuses them first (PROTOCOL.md 7)
                    raise RecordFieldError(f"{label} record {key!r}: unknown field(s) {sorted(unknown)[:5]}")
            skipped = self._stale(synced, records) if guard else []
            stale = set(skipped)
            accepted = {key: record for key, record in records.items() if key not in stale}
            if accepted:
                self._write_rows(synced, accepted, received_at or 0)
            return skipped

    def _stale(self, synced: _Synced, records: dict[str, SyncRecord]) -> list[str]:
        """Keys of ``records`` older than the row or tombstone stored here (the staleness guard, 7.6)."""
        keys = list(records)
        stored, tombs = self._stored_stamps(synced, keys), self.get_tombstones(synced.label, keys)
        return [key for key, record in records.items()
                if (stored[key] if key in stored else tombs.get(key, -1)) > record.last_modified]

    def _write_rows(self, synced: _Synced, records: dict[str, SyncRecord], received_at: int) -> None:
        """Store ``records`` and their stamps: one statement per table (per set of fields sent), each column
        bound as one array of texts (in binary: no quoting to do) that PostgreSQL casts to the column's type."""
        table = synced.table

        def names_of(item: tuple[str, SyncRecord]) -> tuple[str, ...]:
            return tuple(sorted(name for name in item[1].data if name != table.key and name not in META_FIELDS))

        for names, group in groupby(sorted(records.items(), key=names_of), key=names_of):
            keys, grouped = zip(*group, strict=True)
            columns = ", ".join(quote(name) for name in (table.key, *names))
            arrays = ", ".join(["%b::text[]", *(f"%b::text[]::{table.types[name]}[]" for name in names)])
            updates = ", ".join(f"{quote(name)} = EXCLUDED.{quote(name)}" for name in names)
            conflict = f"DO UPDATE SET {updates}" if names else "DO NOTHING"
            values = [list(keys), *([as_text(table.types[name], record.data[name]) for record in grouped] for name in names)]
            self.connection.execute(f"INSERT INTO {synced.base} ({columns}) SELECT * FROM unnest({arrays}) "
                                    f"ON CONFLICT ({synced.key}) {conflict}", values)
        newest = [max(received_at, max(record.timestamps.values(), default=0)) for record in records.values()]
        self.connection.execute(
            f'INSERT INTO {synced.shadow} ("key", "lm", "received_at", "stamps") '
            "SELECT k, l, %s, s::jsonb FROM unnest(%b::text[], %b::bigint[], %b::text[]) AS u(k, l, s) "
            'ON CONFLICT ("key") DO UPDATE SET "lm" = EXCLUDED."lm", "received_at" = EXCLUDED."received_at", '
            '"stamps" = EXCLUDED."stamps"',
            (received_at, list(records), newest, [json_text(record.timestamps) for record in records.values()]),
        )
        self.connection.execute(f'DELETE FROM {synced.tomb} WHERE "key" = ANY(%s)', (list(records),))
        self._clock_at_least(max(newest))

    def delete_many(
        self, label: str, deletes: dict[str, int], *, received_at: int | None = None, guard: bool = True
    ) -> list[str]:
        synced = self._model(label)
        with self._guard, self._write(), storage_errors(self.url):
            if not deletes:
                return []
            stored = self._stored_stamps(synced, list(deletes))
            # a key PostgreSQL cannot hold names no row here: nothing to delete, no tombstone to keep
            skipped = [key for key, stamp in deletes.items() if (guard and stored.get(key, -1) > stamp) or _holds_nul(key)]
            kept = set(skipped)
            accepted = {key: stamp for key, stamp in deletes.items() if key not in kept}
            if accepted:
                keys = list(accepted)
                erased = {} if received_at is None else self.get_records(label, keys)
                self.connection.execute(f"DELETE FROM {synced.base} WHERE {synced.key} = ANY(%s)", (keys,))
                self.connection.execute(f'DELETE FROM {synced.shadow} WHERE "key" = ANY(%s)', (keys,))
                rows = [(key, own if received_at is None else received_at, None if received_at is None else own,
                         None if key not in erased else _jsonb(erased[key].to_dict())) for key, own in accepted.items()]
                with self.connection.cursor() as cursor:
                    cursor.executemany(
                        f'INSERT INTO {synced.tomb} AS t ("key", "stamp", "hlc", "row") VALUES (%s, %s, %s, %s) '
                        'ON CONFLICT ("key") DO UPDATE SET "stamp" = greatest(t."stamp", EXCLUDED."stamp"), '
                        '"hlc" = CASE WHEN EXCLUDED."hlc" IS NULL THEN NULL ELSE greatest(coalesce(t."hlc", t."stamp"), '
                        'EXCLUDED."hlc") END, "row" = coalesce(EXCLUDED."row", t."row")',
                        rows,
                    )
                self._clock_at_least(max(*accepted.values(), received_at or 0))
            return skipped

    # ------------------------------------------------------------------ references

    def reference_violations(
        self, written: Mapping[str, Collection[str]], deleted: Mapping[str, Collection[str]]
    ) -> list[ReferenceViolation]:
        """Rows that refer to a missing row after ``written`` were stored and ``deleted`` removed (label -> keys),
        inside the round's transaction (the constraints are deferred to its commit)."""
        by_table = {synced.table.name: synced for synced in self._synced.values()}
        found: list[ReferenceViolation] = []
        for synced in self._synced.values():
            for fk in synced.table.foreign_keys:
                parent = by_table.get(fk.parent_table)
                if parent is None:
                    continue
                column, parent_column = quote(fk.column), quote(fk.parent_column)
                missing = f"NOT EXISTS (SELECT 1 FROM {parent.base} AS p WHERE p.{parent_column} = c.{column})"
                checks = []
                if written.get(synced.label):
                    checks.append((f"c.{synced.key} = ANY(%s)", list(written[synced.label])))
                if deleted.get(parent.label) and fk.parent_column == parent.table.key:
                    checks.append((f"c.{column} = ANY(%s)", list(deleted[parent.label])))
                for where, values in checks:
                    rows = self._fetch(f"SELECT c.{synced.key}, c.{column} FROM {synced.base} AS c "
                                       f"WHERE {where} AND c.{column} IS NOT NULL AND {missing}", (values,))
                    found += [ReferenceViolation(synced.label, key, parent.label, value) for key, value in rows]
        return sorted(set(found), key=lambda violation: (violation.label, violation.key))

    # ------------------------------------------------------------------ scopes

    def _round_transaction(self) -> AbstractContextManager[None]:
        return self.transaction()  # with the round lock held exclusively: the refresh writes

    def hidden(self, label: str, keys: Iterable[str]) -> set[str]:
        scoped = self._scope_of(label)
        if scoped is None:
            return set()
        with self._guard, storage_errors(self.url):
            return scoped[0].hidden(label, scoped[1], _storable(keys))

    def departed(self, label: str, keys: Iterable[str]) -> dict[str, int]:
        scoped = self._scope_of(label)
        if scoped is None:
            return {}
        with self._guard, storage_errors(self.url):
            return scoped[0].departed(label, scoped[1], _storable(keys))

    def outside_scope(self, label: str, keys: Iterable[str]) -> set[str]:
        scoped = self._scope_of(label)
        if scoped is None:
            return set()
        with self._guard, storage_errors(self.url):
            return scoped[0].outside(label, scoped[1], _storable(keys), self.clock.last)

    # ------------------------------------------------------------------ maintenance

    def purge_tombstones(self, *, retention_seconds: float | None = None) -> int:
        """Drop tombstones older than ``retention_seconds`` (default 90 days); return how many went."""
        retention = DEFAULT_TOMBSTONE_RETENTION if retention_seconds is None else retention_seconds
        if retention < 0:
            raise InvalidParameterError("retention_seconds must be >= 0")
        cutoff = max(0, system_ms() - int(retention * 1000)) << 16
        purged = 0
        with self._guard, self.transaction():
            for synced in self._synced.values():
                purged += self.connection.execute(f'DELETE FROM {synced.tomb} WHERE "stamp" < %s', (cutoff,)).rowcount
        return purged


def _storable(keys: Iterable[str]) -> list[str]:
    """The keys a row here can have: not those holding NUL, which PostgreSQL's text refuses (none is stored)."""
    return [key for key in keys if not _holds_nul(key)]


def _holds_nul(value: Any) -> bool:
    """Whether a JSON value holds the character PostgreSQL's text and JSONB refuse, in a string or a key."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(map(_holds_nul, value))
    return False


def _jsonb(value: Any) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(value, dumps=json_text)

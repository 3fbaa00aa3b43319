"""Writing what sync decided into the app's tables: received rows and deletes, stamped as sent and
never logged as local changes, and what a client cannot store yet (``kept.py``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from ..errors import RecordFieldError
from ..protocol.wire import RecordError, SyncRecord, record_error
from . import changelog
from .core import StorageCore
from .ddl import S_KEY, S_LM, S_PENDING, S_RECEIVED, TOMB_HLC, UNLOGGED, Tracked
from .kept import has_rows, held_records, hold, release, split_unknown, write_kept
from .mapping import IN_KEYS, TableMapping, keys_json, plain_rows, record_json, shadow_rows, upsert_sql, value_rows
from .references import ReferenceChecks
from .schema import PREFIX, quote
from .transaction import serialized


@dataclass
class ChangedKeys:
    """The keys of one table that sync's writes inserted, updated and deleted."""

    inserted: set[str] = field(default_factory=set)
    updated: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)


class SyncWrites(StorageCore):
    """The writes of :class:`SqliteSyncStorage` that sync makes (both roles), and what it holds back."""

    noting_changes = False
    """Whether to note which rows sync's writes insert, update and delete (:meth:`take_changes`)."""
    _notes: dict[str, ChangedKeys]
    _references: ReferenceChecks
    _writes_alone: dict[str, tuple[tuple[int, int], bool]]
    """Table -> (schema versions of main and temp, what :meth:`_upsert_writes_alone` found then)."""

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
                if plain is None or not self._upsert_as_bound(tracked, *plain):
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
        if self.noting_changes:
            self._note_written(tracked, records)
        release(self.connection, tracked, records)
        write_kept(self.connection, tracked, records, kept)
        self._references.note(model, plain)
        stamped, stamp_rows = shadow_rows(tracked, records, received_at)
        stamp_columns = ", ".join(quote(name) for name in stamped)
        marks = ", ".join("?" for _ in range(3 + len(stamped)))
        self.connection.executemany(
            f"INSERT OR REPLACE INTO {tracked.shadow} ({S_KEY}, {S_LM}, {S_RECEIVED}, {stamp_columns}, {S_PENDING}) "
            f"VALUES ({marks}, 0)",
            stamp_rows,
        )
        if self.connection.execute(f"SELECT EXISTS (SELECT 1 FROM {tracked.tomb})").fetchone()[0]:  # none on a first sync
            self.connection.execute(f'DELETE FROM {tracked.tomb} WHERE "key" IN {IN_KEYS}', (keys_json(records),))
        changelog.write_clock(self.connection, max(map(itemgetter(1), stamp_rows)))
        return list(refused)

    def _note_written(self, tracked: Tracked, records: Mapping[str, SyncRecord]) -> None:
        """Note which of ``records`` are new here and which replace a stored row (before they are stored)."""
        existing = self._stored_stamps(tracked, keys_json(records)) if has_rows(self.connection, tracked.shadow) else {}
        notes = self._notes.setdefault(tracked.label, ChangedKeys())
        for key in records:
            (notes.updated if key in existing or key in notes.inserted else notes.inserted).add(key)
            notes.deleted.discard(key)

    def _note_deleted(self, tracked: Tracked, keys: list[str]) -> None:
        notes = self._notes.setdefault(tracked.label, ChangedKeys())
        for key in keys:
            if key in notes.inserted:  # new in this sync, gone again: no change to report
                notes.inserted.discard(key)
            else:
                notes.updated.discard(key)
                notes.deleted.add(key)

    def take_changes(self) -> dict[str, ChangedKeys]:
        """The rows sync's writes inserted, updated and deleted since the last call, by model label, while
        :attr:`noting_changes` (a row inserted then updated counts as inserted; one deleted then written again
        as written). Writes later rolled back may be among them."""
        notes, self._notes = self._notes, {}
        return notes

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

    def _upsert_as_bound(self, tracked: Tracked, names: Sequence[str], rows: Sequence[Sequence[Any]]) -> bool:
        """Upsert rows whose values bind as they are; False if the binding refuses one (a list, an
        object, an integer past 64 bits). The rows before that one are written then, with the very
        values the record-by-record path binds for them (it converts only what does not bind), so
        writing the page again that way repeats them harmlessly; no savepoint is taken for it (see
        :meth:`Transactions.write`)."""
        try:
            self.connection.executemany(upsert_sql(tracked, names), rows)
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
            if self.noting_changes:
                self._note_deleted(tracked, [key for key in deletes if key in stored])
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

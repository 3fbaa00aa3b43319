"""What every part of ``SqliteSyncStorage`` stands on: the connection, the tracked tables, the fold, page reads."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

import sqlite_utils

from ..errors import UnknownModelError
from ..protocol.wire import SyncRecord
from . import changelog
from .ddl import S_KEY, S_LM, TOMB_HLC, Tracked
from .kept import has_rows, read_kept, with_kept
from .mapping import IN_KEYS, TableMapping, lenient_text
from .transaction import Transactions


class StorageCore:
    """The state ``SqliteSyncStorage.__init__`` sets up, and the reads every role makes."""

    connection: sqlite3.Connection
    db: sqlite_utils.Database
    path: str | None
    role: str
    identity_field: str
    _tx: Transactions
    _models: dict[str, TableMapping]
    """Label -> the tracked table."""
    _labels_by_table: dict[str, str]

    def _fold_targets(self, registry: Mapping[str, Tracked]) -> list[Tracked]:
        tables = {name for (name,) in self.connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return [tracked for name, tracked in registry.items() if name in tables]

    def _fold_log(self) -> None:
        """Fold the change log, if anything was logged, so shadow rows and tombstones are current."""
        with self._tx.lock:
            if changelog.log_is_empty(self.connection):
                return
            with self._tx.write():
                changelog.fold(self.connection, self._fold_targets(changelog.read_registry(self.connection)))

    def _model(self, label: str) -> TableMapping:
        try:
            return self._models[label]
        except KeyError:
            raise UnknownModelError(f"unknown model label {label!r}") from None

    def _page(
        self, model: TableMapping, where: str, params: list[Any], limit: int | None, *, served: bool = False
    ) -> list[tuple[str, SyncRecord]]:
        sql = f"{model.select} WHERE {where} ORDER BY s.{S_LM}, s.{S_KEY} LIMIT ?"
        rows = self._fetch_all(sql, [*params, -1 if limit is None else limit])
        return self._with_kept(model, model.records(rows, served=served))

    def _with_kept(self, model: TableMapping, records: list[tuple[str, SyncRecord]]) -> list[tuple[str, SyncRecord]]:
        """A client's records with the fields kept beside their rows (``kept.py``)."""
        if self.role != "client" or not records or not has_rows(self.connection, model.tracked.kept):
            return records
        return with_kept(records, read_kept(self.connection, model.tracked, map(itemgetter(0), records)))

    def _fetch_all(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of a query. Another program may have stored bytes that are not UTF-8 in a TEXT
        column, which fails the read: it is then read again with such bytes as lone surrogates,
        so that the row can be named and quarantined instead of failing every sync."""
        try:
            return self.connection.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            factory = self.connection.text_factory
            self.connection.text_factory = lenient_text
            try:
                return self.connection.execute(sql, params).fetchall()
            finally:
                self.connection.text_factory = factory

    def _read_records(self, model: TableMapping, keys: str) -> dict[str, SyncRecord]:
        rows = self._fetch_all(f"{model.select} WHERE s.{S_KEY} IN {IN_KEYS}", (keys,))
        return dict(self._with_kept(model, model.records(rows)))

    def _tombstone_stamps(self, tracked: Tracked, keys: str) -> dict[str, int]:
        """key -> the delete's own stamp, for the tombstones among ``keys`` (a JSON array)."""
        rows = self.connection.execute(f'SELECT "key", {TOMB_HLC} FROM {tracked.tomb} WHERE "key" IN {IN_KEYS}', (keys,))
        return dict(rows)

    def _stored_stamps(self, tracked: Tracked, keys: str) -> dict[str, int]:
        """key -> last_modified, for the rows stored among ``keys`` (a JSON array)."""
        rows = self.connection.execute(f"SELECT {S_KEY}, {S_LM} FROM {tracked.shadow} WHERE {S_KEY} IN {IN_KEYS}", (keys,))
        return dict(rows)

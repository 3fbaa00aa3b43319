"""The server role of ``SqliteSyncStorage``: what changed since a checkpoint, and what deletes erased.

Rows are served in delivery order, ``(last_modified, key)``, where a row's
last_modified counts when the server stored it; a tombstone's ``"stamp"`` is its
place in that order, and its own HLC (``"hlc"``) is what is sent and compared.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import AbstractContextManager

from ..engine.protocols import Cursor
from ..protocol.hlc import HLC_MAX
from ..protocol.wire import SyncRecord
from .core import StorageCore
from .ddl import S_LM, TOMB_HLC
from .mapping import IN_KEYS, keys_json, position_filter, record_json
from .scopes import AnswersForUsers
from .transaction import serialized


class ServedChanges(AnswersForUsers, StorageCore):
    """The server role's part of :class:`SqliteSyncStorage`; ``scoped_to`` is :class:`AnswersForUsers`'."""

    def _round_transaction(self) -> AbstractContextManager[None]:
        return self._tx()

    def _before_refresh(self) -> None:
        self._fold_log()

    @serialized
    def hidden(self, label: str, keys: Iterable[str]) -> set[str]:
        """Of ``keys``, those whose row exists and is not the current user's to see or change."""
        scoped = self._scope_of(label)
        return set() if scoped is None else scoped[0].hidden(label, scoped[1], keys)

    @serialized
    def departed(self, label: str, keys: Iterable[str]) -> dict[str, int]:
        """Of ``keys``, the rows that left the current user's view: key -> the delete their devices got."""
        scoped = self._scope_of(label)
        return {} if scoped is None else scoped[0].departed(label, scoped[1], keys)

    @serialized
    def outside_scope(self, label: str, keys: Iterable[str]) -> set[str]:
        """Of ``keys`` (rows the current request wrote), those the user's scope does not hold now; the
        others are the user's from now on."""
        scoped = self._scope_of(label)
        return set() if scoped is None else scoped[0].outside(label, scoped[1], keys, self.clock.last)

    @serialized
    def get_changed_since(
        self, label: str, since: int, *, after: Cursor | None = None, limit: int | None = None,
        until: int | None = None,
    ) -> list[tuple[str, SyncRecord]]:
        model = self._model(label)
        self._fold_log()
        scoped = self._scope_of(label)
        if scoped is not None:
            reads, user = scoped
            sql, named = reads.page(label, user, since, None if after is None else (after.timestamp, after.key), limit, until)
            return model.records(self._fetch_all(sql, named), served=True)
        where, params = position_filter(since, after)
        if until is not None:
            where, params = f"{where} AND s.{S_LM} <= ?", [*params, until]
        return self._page(model, where, params, limit, served=True)

    @serialized
    def get_deletes_since(self, label: str, since: int, *, until: int | None = None) -> dict[str, int]:
        tracked = self._model(label).tracked
        self._fold_log()
        scoped = self._scope_of(label)
        if scoped is not None:
            reads, user = scoped
            return reads.gone_since(label, user, since, until)
        return dict(self.connection.execute(
            f'SELECT "key", {TOMB_HLC} FROM {tracked.tomb} WHERE "stamp" > ? AND "stamp" <= ?',
            (since, HLC_MAX if until is None else until),
        ))

    @serialized
    def get_buried(self, label: str, keys: Iterable[str]) -> dict[str, SyncRecord]:
        tracked = self._model(label).tracked
        self._fold_log()
        rows = self.connection.execute(
            f'SELECT "key", "row" FROM {tracked.tomb} WHERE "row" IS NOT NULL AND "key" IN {IN_KEYS}', (keys_json(keys),)
        )
        return {key: SyncRecord.from_dict(key, json.loads(text), label=label) for key, text in rows}

    @serialized
    def keep_buried(self, label: str, records: dict[str, SyncRecord]) -> None:
        tracked = self._model(label).tracked
        with self._tx.write():
            self.connection.executemany(
                f'UPDATE {tracked.tomb} SET "row" = ? WHERE "key" = ?',
                [(record_json(record), key) for key, record in records.items()],
            )

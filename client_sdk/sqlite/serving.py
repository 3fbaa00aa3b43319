"""The server role of ``SqliteSyncStorage``: what changed since a checkpoint, and what deletes erased.

Rows are served in delivery order, ``(last_modified, key)``, where a row's
last_modified counts when the server stored it; a tombstone's ``"stamp"`` is its
place in that order, and its own HLC (``"hlc"``) is what is sent and compared.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from ..engine.protocols import Cursor
from ..protocol.hlc import HLC_MAX
from ..protocol.wire import SyncRecord
from .core import StorageCore
from .ddl import S_LM, TOMB_HLC
from .mapping import IN_KEYS, keys_json, position_filter, record_json
from .transaction import serialized


class ServedChanges(StorageCore):
    """The server role's part of :class:`SqliteSyncStorage`."""

    @serialized
    def get_changed_since(
        self, label: str, since: int, *, after: Cursor | None = None, limit: int | None = None,
        until: int | None = None,
    ) -> list[tuple[str, SyncRecord]]:
        model = self._model(label)
        self._fold_log()
        where, params = position_filter(since, after)
        if until is not None:
            where, params = f"{where} AND s.{S_LM} <= ?", [*params, until]
        return self._page(model, where, params, limit, served=True)

    @serialized
    def get_deletes_since(self, label: str, since: int, *, until: int | None = None) -> dict[str, int]:
        tracked = self._model(label).tracked
        self._fold_log()
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

"""The client role of ``SqliteSyncStorage``: local changes not yet acknowledged, and the sync state.

A row or tombstone is *pending* from the write that changed it until the server
acknowledges that very version; partial indexes hold only what is pending, so
these reads cost O(pending), not O(table).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from ..engine.protocols import Cursor
from ..protocol.wire import AfterKeys, SyncRecord
from .core import StorageCore
from .ddl import META, S_KEY, S_LM, S_PENDING
from .mapping import IN_KEYS, keys_json, position_filter
from .transaction import serialized


class PendingChanges(StorageCore):
    """The client role's part of :class:`SqliteSyncStorage`."""

    @serialized
    def get_pending(self, label: str, *, after: Cursor | None = None, limit: int | None = None) -> list[tuple[str, SyncRecord]]:
        model = self._model(label)
        self._fold_log()
        where, params = position_filter(-1, after)
        return self._page(model, f"s.{S_PENDING} = 1 AND {where}", params, limit)

    @serialized
    def get_pending_deletes(self, label: str) -> dict[str, int]:
        tracked = self._model(label).tracked
        self._fold_log()
        return dict(self.connection.execute(f'SELECT "key", "stamp" FROM {tracked.tomb} WHERE "pending" = 1'))

    @serialized
    def get_pending_keys(self, label: str, keys: Iterable[str]) -> set[str]:
        tracked = self._model(label).tracked
        self._fold_log()
        anything = self.connection.execute(  # both answered by the partial "pending" indexes
            f"SELECT EXISTS (SELECT 1 FROM {tracked.shadow} WHERE {S_PENDING} = 1) "
            f'OR EXISTS (SELECT 1 FROM {tracked.tomb} WHERE "pending" = 1)'
        ).fetchone()[0]
        if not anything:
            return set()
        wanted = keys_json(keys)
        rows = self.connection.execute(
            f"SELECT {S_KEY} FROM {tracked.shadow} WHERE {S_PENDING} = 1 AND {S_KEY} IN {IN_KEYS} "
            f'UNION SELECT "key" FROM {tracked.tomb} WHERE "pending" = 1 AND "key" IN {IN_KEYS}',
            (wanted, wanted),
        )
        return {key for (key,) in rows}

    @serialized
    def has_pending_after(self, stamp: int) -> bool:
        self._fold_log()
        for model in self._models.values():
            tracked = model.tracked
            if self.connection.execute(  # both answered by the partial "pending" indexes
                f"SELECT EXISTS (SELECT 1 FROM {tracked.shadow} WHERE {S_PENDING} = 1 AND {S_LM} > ?) "
                f'OR EXISTS (SELECT 1 FROM {tracked.tomb} WHERE "pending" = 1 AND "stamp" > ?)',
                (stamp, stamp),
            ).fetchone()[0]:
                return True
        return False

    @serialized
    def acknowledge(self, label: str, records: dict[str, int], deletes: dict[str, int]) -> None:
        tracked = self._model(label).tracked
        with self._tx.write():
            self._fold_log()  # a write made since the push changes last_modified: it stays pending
            self.connection.executemany(
                f"UPDATE {tracked.shadow} SET {S_PENDING} = 0 WHERE {S_KEY} = ? AND {S_LM} = ?", records.items()
            )
            self.connection.executemany(
                f'UPDATE {tracked.tomb} SET "pending" = 0 WHERE "key" = ? AND "stamp" = ?', deletes.items()
            )

    @serialized
    def mark_pending(self, label: str, keys: Iterable[str]) -> None:
        tracked = self._model(label).tracked
        with self._tx.write():
            self._fold_log()
            self.connection.execute(f"UPDATE {tracked.shadow} SET {S_PENDING} = 1 WHERE {S_KEY} IN {IN_KEYS}", (keys_json(keys),))

    @serialized
    def pending_count(self) -> int:
        """Local changes (rows and tombstones) the server has not acknowledged yet."""
        self._fold_log()
        total = 0
        for model in self._models.values():
            tracked = model.tracked
            total += self.connection.execute(
                f"SELECT (SELECT count(*) FROM {tracked.shadow} WHERE {S_PENDING} = 1) "
                f'+ (SELECT count(*) FROM {tracked.tomb} WHERE "pending" = 1)'
            ).fetchone()[0]
        return total

    # ------------------------------------------------------------------ sync state

    @serialized
    def get_checkpoint(self) -> int:
        row = self.connection.execute(f"SELECT value FROM {META} WHERE name = 'checkpoint'").fetchone()
        return 0 if row is None else int(row[0])

    @serialized
    def save_checkpoint(self, checkpoint: int, after_keys: AfterKeys | None = None) -> None:
        with self._tx.write():
            self.connection.executemany(
                f"INSERT INTO {META} (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [("checkpoint", checkpoint), ("after_keys", json.dumps(after_keys or {}))],
            )

    @serialized
    def refetch(self, label: str) -> None:
        """Have the next sync ask the server for every row of ``label`` again, from the start, as
        when this device starts tracking the model (its cursor in ``after_keys``, PROTOCOL.md 7)."""
        self._model(label)
        with self._tx.write():
            if self.get_checkpoint():  # from 0, every row comes anyway
                self.save_checkpoint(self.get_checkpoint(), {**self.get_after_keys(), label: {"key": "", "timestamp": 0}})

    @serialized
    def get_after_keys(self) -> AfterKeys:
        row = self.connection.execute(f"SELECT value FROM {META} WHERE name = 'after_keys'").fetchone()
        if row is None:
            return {}
        after_keys: AfterKeys = json.loads(row[0])  # as save_checkpoint stored them
        return after_keys

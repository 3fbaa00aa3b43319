"""An in-memory :class:`DatabaseSyncStorage`, for tests and for embedding the engine without SQLite."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..errors import UnknownModelError
from ..protocol.hlc import HybridLogicalClock
from ..protocol.wire import AfterKeys, JsonDict, SyncRecord
from .protocols import Cursor


@dataclass
class _Model:
    rows: dict[str, SyncRecord] = field(default_factory=dict)
    tombstones: dict[str, int] = field(default_factory=dict)
    """key -> the delete's own stamp."""
    delivered: dict[str, int] = field(default_factory=dict)
    """key -> the tombstone's place in delivery order (when a server stored it)."""
    buried: dict[str, SyncRecord] = field(default_factory=dict)
    """key -> what a delete a server stored erased."""
    pending: set[str] = field(default_factory=set)
    pending_deletes: set[str] = field(default_factory=set)

    def copy(self) -> _Model:
        """Records are replaced, never mutated in place, so copying the containers is enough."""
        return _Model(dict(self.rows), dict(self.tombstones), dict(self.delivered), dict(self.buried),
                      set(self.pending), set(self.pending_deletes))

    def bury(self, key: str, stamp: int, delivered: int) -> None:
        """Keep a tombstone; neither its own stamp nor its delivery ever moves back."""
        self.tombstones[key] = max(stamp, self.tombstones.get(key, 0))
        self.delivered[key] = max(delivered, self.delivered.get(key, 0))

    def unbury(self, key: str) -> None:
        self.tombstones.pop(key, None)
        self.delivered.pop(key, None)
        self.buried.pop(key, None)


def _after(record_key: tuple[int, str], after: Cursor | None, since: int) -> bool:
    if after is None:
        return record_key[0] > since
    return record_key > (after.timestamp, after.key)


class MemoryStorage:
    """Rows, stamps, tombstones and sync state in dicts.

    ``write`` and ``delete`` play the app: they stamp with ``clock`` the way the
    SQLite triggers do (only changed fields; every field on insert) and mark the
    change pending. ``transaction()`` snapshots the state and restores it if the
    block raises, so the engine's all-or-nothing rounds hold here too.
    """

    def __init__(self, labels: Iterable[str], clock: HybridLogicalClock | None = None, identity_field: str = "id") -> None:
        self.clock = clock if clock is not None else HybridLogicalClock()
        self.identity_field = identity_field
        self._models = {label: _Model() for label in labels}
        self._checkpoint = 0
        self._after_keys: AfterKeys = {}
        self._lock = threading.RLock()

    def _model(self, label: str) -> _Model:
        try:
            return self._models[label]
        except KeyError:
            raise UnknownModelError(f"unknown model label {label!r}") from None

    # -- the app's side --
    def write(self, label: str, key: str, values: JsonDict) -> None:
        """Insert or update a row as the app would: stamp what changed, mark pending."""
        with self._lock:
            model = self._model(label)
            current = model.rows.get(key)
            data = dict(current.data) if current else {self.identity_field: key}
            changed = [name for name, value in values.items() if current is None or name not in data or data[name] != value]
            if current is not None and not changed:
                return
            data.update(values)
            stamp = self.clock.now()
            stamps = dict(current.timestamps) if current else {}
            for name in (data if current is None else changed):
                stamps[name] = stamp
            model.rows[key] = SyncRecord(key, data, stamps)
            model.unbury(key)
            model.pending_deletes.discard(key)
            model.pending.add(key)

    def delete(self, label: str, key: str) -> None:
        """Delete a row as the app would: tombstone it, mark pending."""
        with self._lock:
            model = self._model(label)
            if model.rows.pop(key, None) is None:
                return
            model.pending.discard(key)
            stamp = self.clock.now()
            model.bury(key, stamp, stamp)
            model.pending_deletes.add(key)

    def rows(self, label: str) -> dict[str, JsonDict]:
        """Plain row data by key, as the app would read it."""
        return {key: dict(record.data) for key, record in self._model(label).rows.items()}

    # -- transactions --
    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            saved = ({label: model.copy() for label, model in self._models.items()}, self._checkpoint, self._after_keys)
            try:
                yield
            except BaseException:
                self._models, self._checkpoint, self._after_keys = saved
                raise

    # -- DatabaseSyncStorage --
    def get_changed_since(
        self, label: str, since: int, *, after: Cursor | None = None, limit: int | None = None,
        until: int | None = None,
    ) -> list[tuple[str, SyncRecord]]:
        rows = [(key, record) for key, record in self._model(label).rows.items()
                if until is None or record.last_modified <= until]
        return self._ordered(rows, since, after, limit)

    def get_deletes_since(self, label: str, since: int, *, until: int | None = None) -> dict[str, int]:
        model = self._model(label)
        return {key: stamp for key, stamp in model.tombstones.items()
                if since < model.delivered[key] and (until is None or model.delivered[key] <= until)}

    def get_records(self, label: str, keys: Iterable[str]) -> dict[str, SyncRecord]:
        rows = self._model(label).rows
        return {key: copy.deepcopy(rows[key]) for key in keys if key in rows}

    def get_tombstones(self, label: str, keys: Iterable[str]) -> dict[str, int]:
        tombstones = self._model(label).tombstones
        return {key: tombstones[key] for key in keys if key in tombstones}

    def get_buried(self, label: str, keys: Iterable[str]) -> dict[str, SyncRecord]:
        buried = self._model(label).buried
        return {key: copy.deepcopy(buried[key]) for key in keys if key in buried}

    def keep_buried(self, label: str, records: dict[str, SyncRecord]) -> None:
        model = self._model(label)
        model.buried.update((key, record) for key, record in records.items() if key in model.tombstones)

    def upsert_many(
        self, label: str, records: dict[str, SyncRecord], *, received_at: int | None = None, guard: bool = True
    ) -> list[str]:
        model = self._model(label)
        skipped = []
        for key, record in records.items():
            stored = model.rows.get(key)
            newest = stored.last_modified if stored else model.tombstones.get(key, -1)
            if guard and newest > record.last_modified:
                skipped.append(key)
                continue
            data = {name: value for name, value in record.user_data().items()}
            data[self.identity_field] = key
            model.rows[key] = SyncRecord(key, data, dict(record.timestamps), received_at if received_at is not None else 0)
            model.unbury(key)
            model.pending.discard(key)
            model.pending_deletes.discard(key)
        return skipped

    def delete_many(
        self, label: str, deletes: dict[str, int], *, received_at: int | None = None, guard: bool = True
    ) -> list[str]:
        model = self._model(label)
        skipped = []
        for key, stamp in deletes.items():
            stored = model.rows.get(key)
            if guard and stored is not None and stored.last_modified > stamp:
                skipped.append(key)
                continue
            erased = model.rows.pop(key, None)
            model.pending.discard(key)
            model.pending_deletes.discard(key)
            model.bury(key, stamp, stamp if received_at is None else received_at)
            if received_at is not None and erased is not None:
                model.buried[key] = SyncRecord(key, erased.data, erased.timestamps)
        return skipped

    def get_pending(self, label: str, *, after: Cursor | None = None, limit: int | None = None) -> list[tuple[str, SyncRecord]]:
        model = self._model(label)
        return self._ordered(((key, model.rows[key]) for key in model.pending), -1, after, limit)

    def get_pending_deletes(self, label: str) -> dict[str, int]:
        model = self._model(label)
        return {key: model.tombstones[key] for key in model.pending_deletes}

    def get_pending_keys(self, label: str, keys: Iterable[str]) -> set[str]:
        model = self._model(label)
        return {key for key in keys if key in model.pending or key in model.pending_deletes}

    def has_pending_after(self, stamp: int) -> bool:
        for model in self._models.values():
            if any(model.rows[key].last_modified > stamp for key in model.pending):
                return True
            if any(model.tombstones[key] > stamp for key in model.pending_deletes):
                return True
        return False

    def acknowledge(self, label: str, records: dict[str, int], deletes: dict[str, int]) -> None:
        model = self._model(label)
        for key, sent in records.items():
            row = model.rows.get(key)
            if row is not None and row.last_modified == sent:
                model.pending.discard(key)
        for key, sent in deletes.items():
            if model.tombstones.get(key) == sent and key not in model.rows:
                model.pending_deletes.discard(key)

    def mark_pending(self, label: str, keys: Iterable[str]) -> None:
        model = self._model(label)
        model.pending.update(key for key in keys if key in model.rows)

    def get_checkpoint(self) -> int:
        return self._checkpoint

    def save_checkpoint(self, checkpoint: int, after_keys: AfterKeys | None = None) -> None:
        self._checkpoint = checkpoint
        self._after_keys = dict(after_keys or {})

    def get_after_keys(self) -> AfterKeys:
        return dict(self._after_keys)

    @staticmethod
    def _ordered(
        items: Iterable[tuple[str, SyncRecord]], since: int, after: Cursor | None, limit: int | None
    ) -> list[tuple[str, SyncRecord]]:
        chosen = sorted(
            ((record.last_modified, key), record) for key, record in items if _after((record.last_modified, key), after, since)
        )
        if limit is not None:
            chosen = chosen[:limit]
        return [(key, copy.deepcopy(record)) for (_, key), record in chosen]

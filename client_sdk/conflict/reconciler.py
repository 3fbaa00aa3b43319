"""Reconciliation of one incoming payload against local rows (PROTOCOL.md section 8).

Pure: it reads records and returns decisions. Storage applies them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..errors import InvalidParameterError
from ..protocol.wire import META_FIELDS, JsonDict, ModelPayload, RecordError, SyncRecord
from .resolvers import FieldTimestampWins
from .types import ConflictResolver, ConflictType, FieldConflict, RecordConflict, RecordResolution, ResolutionSource


@dataclass(frozen=True)
class ConflictEntry:
    """One line of the conflict log: what clashed and which side won."""

    conflict: RecordConflict
    resolution_source: ResolutionSource


@dataclass
class ReconciliationResult:
    """What to store, what to delete, and what to send back, for one payload.

    The keys of the payload's records by outcome: ``created_keys`` (new here),
    ``applied_keys`` (the local row had no unsynced change), ``compatible_keys``
    (both sides changed it, no field clashed) and ``conflict_keys`` (a field
    clashed, or a delete met a newer local change; see ``conflict_log``).
    ``model_label`` names the payload's model.
    """

    applied_keys: set[str] = field(default_factory=set)
    compatible_keys: list[str] = field(default_factory=list)
    conflict_keys: list[str] = field(default_factory=list)
    conflict_log: list[ConflictEntry] = field(default_factory=list)
    created_keys: set[str] = field(default_factory=set)
    errors: list[RecordError] = field(default_factory=list)
    response_records: dict[str, SyncRecord] = field(default_factory=dict)
    to_delete: dict[str, int] = field(default_factory=dict)
    to_upsert: dict[str, SyncRecord] = field(default_factory=dict)
    model_label: str = field(default="", kw_only=True)

    @property
    def created(self) -> set[str]:
        """Alias of ``created_keys``."""
        return self.created_keys

    @property
    def applied(self) -> set[str]:
        """Alias of ``applied_keys``."""
        return self.applied_keys

    @property
    def compatible(self) -> list[str]:
        """Alias of ``compatible_keys``."""
        return self.compatible_keys

    @property
    def conflicts(self) -> list[str]:
        """Alias of ``conflict_keys``."""
        return self.conflict_keys


def field_conflicts(local: SyncRecord, remote: SyncRecord, checkpoint: int) -> list[FieldConflict]:
    """Fields both sides wrote after ``checkpoint`` with different values."""
    clashes = []
    for name in sorted((set(local.data) | set(remote.data)) - META_FIELDS):
        local_stamp = local.timestamps.get(name, 0)
        remote_stamp = remote.timestamps.get(name, 0)
        if local_stamp <= checkpoint or remote_stamp <= checkpoint:
            continue
        local_value, remote_value = local.data.get(name), remote.data.get(name)
        if local_value != remote_value or type(local_value) is not type(remote_value):
            clashes.append(FieldConflict(name, local_value, remote_value, local_stamp, remote_stamp))
    return clashes


def join_fields(kept: SyncRecord, incoming: SyncRecord) -> SyncRecord:
    """Per field, the value with the newer stamp; the same whichever argument comes first.

    This is how a server folds an edit into what a delete erased (the row's last values,
    which it keeps with the tombstone): a later edit then brings the row back with every
    field's newest value, whatever order the edit and the delete reached it in. Equal
    stamps are settled by the values' canonical JSON, so the join does not depend on order.
    """
    data: JsonDict = {}
    stamps: dict[str, int] = {}
    for name in sorted((kept.data.keys() | incoming.data.keys()) - META_FIELDS):
        candidates = [(record.timestamps.get(name, 0), _canonical(record.data[name]), record)
                      for record in (kept, incoming) if name in record.data]
        stamp, _text, winner = max(candidates, key=lambda candidate: candidate[:2])
        data[name] = winner.data[name]
        if name in winner.timestamps:
            stamps[name] = stamp
    return SyncRecord(kept.key or incoming.key, data, stamps)


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class PayloadReconciler:
    """Decides, record by record, what an incoming payload does to local rows."""

    def __init__(self, resolver: ConflictResolver | None = None) -> None:
        if resolver is not None and not callable(getattr(resolver, "resolve", None)):
            raise InvalidParameterError("resolver must have a resolve(conflict) method")
        self.resolver: ConflictResolver = resolver if resolver is not None else FieldTimestampWins()

    def reconcile(
        self,
        payload: ModelPayload,
        local_records: Mapping[str, SyncRecord],
        checkpoint: int,
        *,
        unsynced: Callable[[str, SyncRecord], bool] | None = None,
    ) -> ReconciliationResult:
        """Reconcile ``payload`` against the ``local_records`` (key -> the stored row) it touches.

        A local row has unsynced changes when its ``sync_field_last_modified`` is past
        ``checkpoint``; a client that tracks pending changes itself passes
        ``unsynced(key, record)`` instead.
        """
        changed = unsynced or (lambda _key, record: record.last_modified > checkpoint)
        result = ReconciliationResult(model_label=payload.model_label)
        for key, remote in payload.records.items():
            self._reconcile_record(result, key, remote, local_records.get(key), checkpoint, changed)
        for key, stamp in payload.deletes.items():
            self._reconcile_delete(result, key, stamp, local_records.get(key))
        return result

    def _reconcile_record(
        self,
        result: ReconciliationResult,
        key: str,
        remote: SyncRecord,
        mine: SyncRecord | None,
        checkpoint: int,
        changed: Callable[[str, SyncRecord], bool],
    ) -> None:
        if mine is None:
            result.to_upsert[key] = remote
            result.created_keys.add(key)
            return
        if not changed(key, mine):
            result.to_upsert[key] = remote
            result.applied_keys.add(key)
            return
        clashes = field_conflicts(mine, remote, checkpoint)
        kind = ConflictType.BOTH_MODIFIED if clashes else ConflictType.COMPATIBLE
        conflict = RecordConflict(key, result.model_label, kind, clashes, mine, remote)
        resolution = self._resolve(result, conflict)
        if resolution is None:
            return
        if resolution.delete or resolution.record is None:
            result.to_delete[key] = max(mine.last_modified, remote.last_modified)
        else:
            result.to_upsert[key] = resolution.record
            result.response_records[key] = resolution.record
        if kind is ConflictType.BOTH_MODIFIED:
            result.conflict_keys.append(key)
            result.conflict_log.append(ConflictEntry(conflict, resolution.source))
        else:
            result.compatible_keys.append(key)

    def _reconcile_delete(self, result: ReconciliationResult, key: str, stamp: int, mine: SyncRecord | None) -> None:
        if mine is None:
            return
        if mine.last_modified <= stamp:
            result.to_delete[key] = stamp
            return
        conflict = RecordConflict(key, result.model_label, ConflictType.DELETE_VS_MODIFY, [], mine, None)
        resolution = self._resolve(result, conflict)
        if resolution is None:
            return
        if resolution.delete or resolution.record is None:
            result.to_delete[key] = stamp
            return
        result.response_records[key] = resolution.record
        if resolution.record is not mine:
            result.to_upsert[key] = resolution.record
        result.conflict_keys.append(key)
        result.conflict_log.append(ConflictEntry(conflict, resolution.source))

    def _resolve(self, result: ReconciliationResult, conflict: RecordConflict) -> RecordResolution | None:
        try:
            resolution = self.resolver.resolve(conflict)
        except Exception as exc:  # a user resolver may raise anything: one error for this key
            result.errors.append({"key": conflict.key, "message": f"resolver failed: {type(exc).__name__}: {exc}"})
            return None
        if not isinstance(resolution, RecordResolution) or (
            not resolution.delete and not isinstance(resolution.record, SyncRecord)
        ):
            result.errors.append({"key": conflict.key, "message": f"resolver returned {resolution!r}, not a RecordResolution"})
            return None
        return resolution

"""The four stock resolvers (PROTOCOL.md section 9). ``FieldTimestampWins`` is the default."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import ConflictStateError, InvalidParameterError
from ..protocol.wire import META_FIELDS, JsonDict, SyncRecord
from .types import ConflictType, RecordConflict, RecordResolution, ResolutionSource


def _both(conflict: RecordConflict) -> tuple[SyncRecord, SyncRecord]:
    if conflict.local is None or conflict.remote is None:
        raise ConflictStateError(f"{conflict.conflict_type.value} conflict on {conflict.key!r} needs both records")
    return conflict.local, conflict.remote


def _keep(record: SyncRecord | None, source: ResolutionSource, conflict: RecordConflict) -> RecordResolution:
    if record is None:
        raise ConflictStateError(f"{conflict.conflict_type.value} conflict on {conflict.key!r} has no {source.value} record")
    return RecordResolution(record=record, source=source, field_conflicts=conflict.field_conflicts)


def _delete(conflict: RecordConflict) -> RecordResolution:
    return RecordResolution(record=None, source=ResolutionSource.REMOTE, delete=True, field_conflicts=conflict.field_conflicts)


class LocalWins:
    """Keep the local record; a remote modify of a locally deleted row is dropped."""

    def resolve(self, conflict: RecordConflict) -> RecordResolution:
        if conflict.conflict_type is ConflictType.MODIFY_VS_DELETE:
            return RecordResolution(None, ResolutionSource.LOCAL, delete=True, field_conflicts=conflict.field_conflicts)
        return _keep(conflict.local, ResolutionSource.LOCAL, conflict)


class RemoteWins:
    """Take the remote record; a remote delete wins over a local modify."""

    def resolve(self, conflict: RecordConflict) -> RecordResolution:
        if conflict.conflict_type is ConflictType.DELETE_VS_MODIFY:
            return _delete(conflict)
        return _keep(conflict.remote, ResolutionSource.REMOTE, conflict)


class FieldTimestampWins:
    """Per field, the value with the higher stamp wins; ties keep local unless told otherwise."""

    def __init__(self, exclude_fields: Iterable[str] | None = None, prefer_remote_on_tie: bool = False) -> None:
        self.exclude_fields = _field_set(exclude_fields, "exclude_fields")
        self.prefer_remote_on_tie = bool(prefer_remote_on_tie)

    def resolve(self, conflict: RecordConflict) -> RecordResolution:
        if conflict.conflict_type is ConflictType.DELETE_VS_MODIFY:
            return _keep(conflict.local, ResolutionSource.LOCAL, conflict)
        if conflict.conflict_type is ConflictType.MODIFY_VS_DELETE:
            return _keep(conflict.remote, ResolutionSource.REMOTE, conflict)
        local, remote = _both(conflict)
        data: JsonDict = {}
        stamps: dict[str, int] = {}
        for name in self._fields(local, remote):
            winner = remote if self._remote_wins(name, local, remote) else local
            data[name] = winner.data.get(name)
            stamps[name] = winner.timestamps.get(name, 0)
        merged = SyncRecord(conflict.key, data, stamps)
        return RecordResolution(record=merged, source=ResolutionSource.MERGED, field_conflicts=conflict.field_conflicts)

    def _fields(self, local: SyncRecord, remote: SyncRecord) -> list[str]:
        names = set(local.data) | set(local.timestamps) | set(remote.data) | set(remote.timestamps)
        return sorted(names - META_FIELDS - self.exclude_fields)

    def _remote_wins(self, name: str, local: SyncRecord, remote: SyncRecord) -> bool:
        local_stamp = local.timestamps.get(name, 0)
        remote_stamp = remote.timestamps.get(name, 0)
        if remote_stamp != local_stamp:
            return remote_stamp > local_stamp
        return self.prefer_remote_on_tie


class FieldOwnershipWins(FieldTimestampWins):
    """Like :class:`FieldTimestampWins`, but some fields always take one side."""

    def __init__(
        self,
        local_fields: Iterable[str],
        remote_fields: Iterable[str],
        exclude_fields: Iterable[str] | None = None,
        prefer_remote_on_tie: bool = False,
    ) -> None:
        super().__init__(exclude_fields=exclude_fields, prefer_remote_on_tie=prefer_remote_on_tie)
        self.local_fields = _field_set(local_fields, "local_fields")
        self.remote_fields = _field_set(remote_fields, "remote_fields")
        overlap = self.local_fields & self.remote_fields
        if overlap:
            raise InvalidParameterError(f"fields cannot be owned by both sides: {', '.join(sorted(overlap))}")

    def _remote_wins(self, name: str, local: SyncRecord, remote: SyncRecord) -> bool:
        if name in self.local_fields:
            return False
        if name in self.remote_fields:
            return True
        return super()._remote_wins(name, local, remote)


def _field_set(fields: Iterable[str] | None, what: str) -> frozenset[str]:
    if fields is None:
        return frozenset()
    if isinstance(fields, str):
        raise InvalidParameterError(f"{what} must be a collection of field names, not a string")
    names = frozenset(fields)
    if not all(isinstance(name, str) and name for name in names):
        raise InvalidParameterError(f"{what} must hold non-empty field names")
    return names

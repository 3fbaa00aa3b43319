"""What a conflict is and what a resolver answers (PROTOCOL.md sections 8-9)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..protocol.wire import SyncRecord


class ConflictType(enum.StrEnum):
    BOTH_MODIFIED = "both_modified"
    """Both sides changed the same field(s) since the checkpoint, to different values."""
    COMPATIBLE = "compatible"
    """Both sides changed the row since the checkpoint, but no field clashes."""
    DELETE_VS_MODIFY = "delete_vs_modify"
    """The remote side deleted a row the local side modified."""
    MODIFY_VS_DELETE = "modify_vs_delete"
    """The remote side modified a row the local side deleted."""


class ResolutionSource(enum.StrEnum):
    LOCAL = "local"
    MERGED = "merged"
    REMOTE = "remote"


@dataclass(frozen=True)
class FieldConflict:
    field_name: str
    local_value: Any
    remote_value: Any
    local_timestamp: int
    remote_timestamp: int


@dataclass(frozen=True)
class RecordConflict:
    key: str
    model_label: str
    conflict_type: ConflictType
    field_conflicts: list[FieldConflict] = field(default_factory=list)
    local: SyncRecord | None = None
    remote: SyncRecord | None = None


@dataclass
class RecordResolution:
    """A resolver's answer: the record to keep, or ``delete=True``."""

    record: SyncRecord | None
    source: ResolutionSource
    delete: bool = False
    field_conflicts: list[FieldConflict] = field(default_factory=list)


@runtime_checkable
class ConflictResolver(Protocol):
    def resolve(self, conflict: RecordConflict) -> RecordResolution: ...

"""Conflicts and their resolution: pure functions of records."""

from .resolvers import FieldOwnershipWins, FieldTimestampWins, LocalWins, RemoteWins
from .types import ConflictResolver, ConflictType, FieldConflict, RecordConflict, RecordResolution, ResolutionSource

__all__ = [
    "ConflictResolver",
    "ConflictType",
    "FieldConflict",
    "FieldOwnershipWins",
    "FieldTimestampWins",
    "LocalWins",
    "RecordConflict",
    "RecordResolution",
    "RemoteWins",
    "ResolutionSource",
]

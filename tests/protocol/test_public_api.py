"""The public surface: everything the spec names is importable from ``client_sdk`` and listed in ``__all__``."""

from __future__ import annotations

import inspect

import client_sdk

SPEC_NAMES = {
    "HybridLogicalClock", "SyncRecord", "ModelPayload", "SyncManifest", "ConflictType", "ResolutionSource",
    "FieldConflict", "RecordConflict", "RecordResolution", "ConflictResolver", "FieldTimestampWins",
    "FieldOwnershipWins", "LocalWins", "RemoteWins", "PayloadReconciler", "ReconciliationResult",
    "DependencyGraph", "ConflictEntry", "DatabaseResult", "DatabaseSyncStorage", "SyncLock", "Transport",
    "DatabaseEngine", "FieldUpdateTracker", "SyncPhase", "SyncStage", "SyncStatus",
}
ERRORS = {
    "SyncError": None,
    "SyncAbortedError": "SyncError",
    "ClockDriftError": "SyncAbortedError",
    "InvalidResponseError": "SyncAbortedError",
    "LockContentionError": "SyncAbortedError",
    "ManifestChecksumError": "SyncAbortedError",
    "PayloadLimitError": "SyncAbortedError",
    "RetryExhaustedError": "SyncAbortedError",
    "ClockOverflowError": "SyncError",
    "ConflictStateError": "SyncError",
    "CircularDependencyError": "SyncError",
    "DecompressionLimitError": "SyncError",
    "InvalidParameterError": "SyncError",
    "ManifestFieldError": "SyncError",
    "RecordFieldError": "SyncError",
    "TransportRequiredError": "SyncError",
    "UnknownDependencyError": "SyncError",
    "UnknownModelError": "SyncError",
    "StorageError": "SyncError",
    "DatabaseLockedError": "StorageError",
}


def test_all_lists_exactly_what_the_module_exports() -> None:
    public = {name for name, value in vars(client_sdk).items()
              if not name.startswith("_") and not inspect.ismodule(value)}
    assert set(client_sdk.__all__) == public
    assert len(client_sdk.__all__) == len(set(client_sdk.__all__))


def test_spec_names_are_public() -> None:
    assert SPEC_NAMES | set(ERRORS) <= set(client_sdk.__all__)


def test_exception_tree_mirrors_the_spec() -> None:
    for name, parent in ERRORS.items():
        cls = getattr(client_sdk, name)
        assert issubclass(cls, Exception)
        if parent is not None:
            assert cls.__bases__[0] is getattr(client_sdk, parent), name

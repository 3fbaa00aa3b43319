"""What a sync or a ``process`` call reports back."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..conflict.reconciler import ConflictEntry, ReconciliationResult

KEY_LISTS = ("pushed", "created", "applied", "compatible", "conflicts", "deleted", "skipped")


class SyncPhase(str, enum.Enum):
    COLLECTING = "collecting"
    EXCHANGING = "exchanging"
    RECONCILING = "reconciling"
    COMMITTING = "committing"
    COMPLETE = "complete"
    FAILED = "failed"


class SyncStage(str, enum.Enum):
    """Stages reported through ``progress(stage, current, total)``."""

    VALIDATE = "validate"
    CLASSIFY = "classify"
    MUTATE = "mutate"
    CALLBACK = "callback"


class SyncStatus(str, enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass
class DatabaseResult:
    """Per-model key lists, the conflict log and errors of one sync (or one ``process``)."""

    pushed: dict[str, list[str]] = field(default_factory=dict)
    created: dict[str, list[str]] = field(default_factory=dict)
    applied: dict[str, list[str]] = field(default_factory=dict)
    compatible: dict[str, list[str]] = field(default_factory=dict)
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    deleted: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    conflict_log: list[ConflictEntry] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    rounds: int = 0
    checkpoint: int = 0
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, kind: str, label: str, keys: list[str]) -> None:
        if keys:
            getattr(self, kind).setdefault(label, []).extend(keys)

    def count(self, kind: str) -> int:
        return sum(len(keys) for keys in getattr(self, kind).values())

    def merge_reconciliation(self, outcome: ReconciliationResult) -> None:
        label = outcome.model_label
        for kind in ("created", "applied", "compatible", "conflicts"):
            self.add(kind, label, getattr(outcome, kind))
        self.conflict_log.extend(outcome.conflict_log)
        self.errors.extend({"model_label": label, **error} for error in outcome.errors)

    def summary(self) -> dict[str, int]:
        """Counts per kind, for logs and the CLI."""
        counts = {kind: self.count(kind) for kind in KEY_LISTS}
        counts["errors"] = len(self.errors)
        counts["rounds"] = self.rounds
        return counts

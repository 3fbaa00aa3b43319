"""What a sync or a ``process`` call reports back."""

from __future__ import annotations

import enum
from collections import defaultdict
from dataclasses import dataclass, field

from ..conflict.reconciler import ConflictEntry, ReconciliationResult
from ..protocol.wire import RecordError

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


def _key_lists() -> defaultdict[str, list[str]]:
    return defaultdict(list)


@dataclass
class DatabaseResult:
    """Per-model key lists (model label -> keys), the conflict log and errors of one sync (or one ``process``).

    On a device, after ``sync()``:

    - ``pushed``: local changes (rows and deletes) sent to the server in this sync.
    - ``applied``: rows received from the server and written here, new rows included: a row pulled
      for the first time counts as applied, not created.
    - ``created``: rows new to the side that reconciled them. A device's sync reports them only in
      a dry run (rows a pull would create here); a server's ``process`` reports the rows a device
      created there.
    - ``compatible``: rows both sides changed with no field clashing: merged, both changes kept.
    - ``conflicts``: rows where a field clashed, or a delete met a newer edit; ``conflict_log``
      says which side won each field.
    - ``deleted``: rows deleted here because the server sent their delete.
    - ``skipped``: received changes not applied in this sync: a row older than a pending local
      delete, a delete held back while the pending edit it beats goes to the server first (it
      comes back with the next answer), the losing side of a key sent both as a record and a
      delete in one answer, or the rows of a model this device does not track (it asks for them
      from the start once it does).
    - ``errors``: records refused, by the server or here, one entry each; ``ok`` is False then. A row
      with a change the server had not taken that went with a parent the server deleted (see
      ``Applying._remove_orphans``) has an entry of its own, besides any refusal of it; the conflict
      log keeps its values.
    - ``held_back``: received records this device cannot store yet (a value its column does not
      take, a constraint its table refuses), with why, as ``errors`` lists them: kept, and applied
      by the first sync after the schema or the data in the way changes. Not errors: the rest
      of the sync goes on, and nothing is lost.

    ``summary()`` counts each list (plus ``errors``, ``held_back`` and ``rounds``).
    """

    applied: defaultdict[str, list[str]] = field(default_factory=_key_lists)
    compatible: defaultdict[str, list[str]] = field(default_factory=_key_lists)
    conflict_log: list[ConflictEntry] = field(default_factory=list)
    conflicts: defaultdict[str, list[str]] = field(default_factory=_key_lists)
    created: defaultdict[str, list[str]] = field(default_factory=_key_lists)
    deleted: defaultdict[str, list[str]] = field(default_factory=_key_lists)
    errors: list[RecordError] = field(default_factory=list)
    pushed: defaultdict[str, list[str]] = field(default_factory=_key_lists)
    skipped: defaultdict[str, list[str]] = field(default_factory=_key_lists)
    held_back: list[RecordError] = field(default_factory=list, kw_only=True)
    rounds: int = field(default=0, kw_only=True)
    checkpoint: int = field(default=0, kw_only=True)
    dry_run: bool = field(default=False, kw_only=True)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def moved_nothing(self) -> bool:
        """Nothing was pushed, applied, deleted, skipped or refused, and nothing is held back."""
        return not self.errors and not self.held_back and not any(getattr(self, kind) for kind in KEY_LISTS)

    def add(self, kind: str, label: str, keys: list[str]) -> None:
        if keys:
            getattr(self, kind).setdefault(label, []).extend(keys)

    def count(self, kind: str) -> int:
        return sum(len(keys) for keys in getattr(self, kind).values())

    def absorb(self, other: DatabaseResult) -> None:
        """Add ``other``'s keys, conflicts and errors to this result's."""
        for kind in KEY_LISTS:
            for label, keys in getattr(other, kind).items():
                self.add(kind, label, keys)
        self.conflict_log.extend(other.conflict_log)
        self.errors.extend(other.errors)

    def merge_reconciliation(self, outcome: ReconciliationResult) -> None:
        label = outcome.model_label
        self.add("created", label, sorted(outcome.created_keys))
        self.add("applied", label, sorted(outcome.applied_keys))
        self.add("compatible", label, outcome.compatible_keys)
        self.add("conflicts", label, outcome.conflict_keys)
        self.conflict_log.extend(outcome.conflict_log)
        self.errors.extend({"model_label": label, **error} for error in outcome.errors)

    def summary(self) -> dict[str, int]:
        """Counts per kind, for logs and the CLI."""
        counts = {kind: self.count(kind) for kind in KEY_LISTS}
        counts["errors"] = len(self.errors)
        counts["held_back"] = len(self.held_back)
        counts["rounds"] = self.rounds
        return counts

"""What the two sides of the engine share: its parts, the clock checks, manifests, reports, record checks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from typing import Any

from ..conflict.reconciler import PayloadReconciler
from ..errors import ClockDriftError
from ..protocol.graph import DependencyGraph
from ..protocol.hlc import HybridLogicalClock, wall_of
from ..protocol.page import page_columns
from ..protocol.wire import AfterKeys, ModelPayload, SyncManifest, SyncRecord
from .checks import all_storable, record_problems
from .options import EngineOptions
from .protocols import (
    ChecksReferences,
    ChecksValues,
    KnowsFields,
    ReferenceViolation,
    SyncLock,
    Transport,
)
from .results import DatabaseResult, SyncPhase, SyncStage

PhaseCallback = Callable[[SyncPhase], None]
ProgressCallback = Callable[[SyncStage, int, int], None]

log = logging.getLogger("client_sdk.sync")


class EngineBase:
    """The parts an engine is made of (set by ``DatabaseEngine.__init__``) and what both sides do with them."""

    storage: Any
    """A :class:`ServerStorage` to serve, a :class:`ClientStorage` to sync, or both (``DatabaseEngine`` checks)."""
    graph: DependencyGraph
    clock: HybridLogicalClock
    node_id: str
    options: EngineOptions
    lock: SyncLock | None
    on_complete: Callable[[DatabaseResult], None] | None
    on_phase: PhaseCallback | None
    progress: ProgressCallback | None
    reconciler: PayloadReconciler
    transaction: Callable[[], AbstractContextManager[Any]]
    transport: Transport | None
    _order: list[str]
    _session: str | None = None
    """The lock's session while this engine syncs."""

    def check_drift(self, manifest: SyncManifest) -> None:
        """Refuse a manifest whose sender's wall clock is too far from ours (PROTOCOL.md 6)."""
        if self.options.clock_drift_max is None or manifest.node_time == 0:
            return
        ours = self.clock.wall_ms() // 1000
        if abs(ours - manifest.node_time) > self.options.clock_drift_max:
            raise ClockDriftError(
                f"clock drift of {abs(ours - manifest.node_time)} s with node {manifest.node_id!r} exceeds "
                f"{self.options.clock_drift_max} s (our clock: {ours}, theirs: {manifest.node_time}, unix seconds)"
            )

    def check_stamps(self, manifest: SyncManifest) -> None:
        """As a server, refuse stamps from further ahead of our clock than the drift allows: one such
        stamp would drag the clock of every node into the future for good."""
        if self.options.clock_drift_max is None:
            return
        ours = self.clock.wall_ms() // 1000
        newest = wall_of(manifest.max_stamp()) // 1000
        if newest - ours > self.options.clock_drift_max:
            raise ClockDriftError(
                f"node {manifest.node_id!r} sent a stamp {newest - ours} s ahead of our clock, over "
                f"{self.options.clock_drift_max} s (our clock: {ours}, the stamp's: {newest}, unix seconds)"
            )

    def _accept(self, manifest: SyncManifest) -> None:
        """Verify the checksum and the clocks; then move our clock past everything the manifest carries
        (called inside the round's transaction, so a round that fails later leaves the clock too)."""
        manifest.verify_checksum()
        self.check_drift(manifest)
        newest = manifest.max_stamp()
        if newest > self.clock.last:  # already past it: moving the clock anyway would write for nothing
            self.clock.receive(newest)

    def _manifest(self, checkpoint: int, payloads: list[ModelPayload], after_keys: AfterKeys, has_more: bool) -> SyncManifest:
        return SyncManifest(
            node_id=self.node_id,
            checkpoint=checkpoint,
            node_time=self.clock.wall_ms() // 1000,
            payloads=payloads,
            after_keys=after_keys,
            has_more=has_more,
        ).seal()

    def _phase(self, phase: SyncPhase) -> None:
        if self.lock is not None:
            if self._session is not None:
                self.lock.update_phase(self._session, phase)
        if self.on_phase is not None:
            self.on_phase(phase)

    def _report(self, stage: SyncStage, current: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, current, total)

    def _invalid_records(self, payload: ModelPayload) -> dict[str, str]:
        """Records this node cannot store as sent: key -> reason (:meth:`_malformed`, then :meth:`_unfit`)."""
        problems = self._malformed(payload)
        problems.update(self._unfit(payload, problems))
        return problems

    def _malformed(self, payload: ModelPayload) -> dict[str, str]:
        """Records no node could store as sent (and, unless the storage keeps them, with fields it has no
        column for): key -> reason. Field names are only compared, never used in SQL."""
        storage = self.storage
        fixed = isinstance(storage, KnowsFields) and not storage.keeps_unknown_fields
        known = storage.fields(payload.model_label) if fixed else None
        identity = self.options.identity_field
        return {} if all_storable(payload.records, identity, known) else record_problems(payload, identity, known)

    def _unfit(self, payload: ModelPayload, excluded: Collection[str] = ()) -> dict[str, str]:
        """The records, but ``excluded``, holding a value their column cannot take, if the storage can tell."""
        if not isinstance(self.storage, ChecksValues) or len(excluded) >= len(payload.records):
            return {}
        rest = {k: r for k, r in payload.records.items() if k not in excluded} if excluded else payload.records
        return self.storage.invalid_values(payload.model_label, rest)

    def _in_our_names(self, payload: ModelPayload) -> ModelPayload:
        """``payload`` with each stamp a peer put under another name for a field (the existing clients
        stamp a foreign key under the model's field name, PROTOCOL.md 14) moved to the field."""
        aliases = self.storage.stamp_aliases(payload.model_label) if isinstance(self.storage, KnowsFields) else {}
        columns = page_columns(payload.records)
        if not aliases or (columns is not None and aliases.keys().isdisjoint(columns.fields)):
            return payload
        renamed = {}
        for key, record in payload.records.items():
            if aliases.keys().isdisjoint(record.timestamps):
                continue
            stamps: dict[str, int] = {}
            for name, stamp in record.timestamps.items():
                name = aliases.get(name, name)
                stamps[name] = max(stamp, stamps.get(name, 0))
            renamed[key] = SyncRecord(key, record.data, stamps, record.received_at)
        if not renamed:
            return payload
        log.warning("tolerated a peer quirk: %d row(s) of %s carry stamps under a foreign key's field name "
                    "(e.g. %r); moved them to the column's name", len(renamed), payload.model_label, next(iter(renamed)))
        return ModelPayload(payload.model_label, {**payload.records, **renamed}, payload.deletes)

    def _reference_violations(self, applied: list[ModelPayload]) -> list[ReferenceViolation]:
        """FOREIGN KEYs left pointing at nothing by applying ``applied``, if the storage can tell."""
        if not isinstance(self.storage, ChecksReferences) or not any(applied):
            return []
        written = {payload.model_label: payload.records.keys() for payload in applied}
        deleted = {payload.model_label: payload.deletes.keys() for payload in applied}
        return self.storage.reference_violations(written, deleted)

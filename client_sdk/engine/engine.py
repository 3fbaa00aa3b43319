"""The sync engine: the server's ``process`` (PROTOCOL.md 7) and the client's round loop (11).

Written against the storage, lock and transport protocols only.

Two deliberate departures from the existing implementation (PROTOCOL.md 14):

* The client pushes what its storage marks *pending* (a local change not yet
  acknowledged) instead of "everything newer than the checkpoint". A change
  the server acknowledged is never re-sent unless it changes again, so a
  delete cannot livelock, and a write made during a round stays pending
  whatever the new checkpoint is.
* The server answers a complete round (nothing left to send) with its own
  clock as the checkpoint, which is safe because ``process`` runs in one
  serialized write transaction; this spares the echo round and lets even the
  existing client finish after a delete. While paging, the checkpoint stays
  put and per-model cursors carry the position, so every row and tombstone
  is delivered exactly once.

While the client pages through a large pull, a worker thread sends each
pull as soon as the answer before it arrives (``pipeline.py``), so the server
reads page n+1 while the client writes page n; answers are still accepted
and applied one round at a time, in order, on the sync's own thread, and
rounds whose answers keep arriving share one write transaction for up to
``COMMIT_INTERVAL`` (each round's checkpoint still commits with its rows).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from itertools import chain, compress, repeat
from math import isfinite
from operator import is_
from typing import Any

from ..conflict.reconciler import ConflictEntry, PayloadReconciler, join_fields
from ..conflict.types import ConflictType, FieldConflict, RecordConflict, ResolutionSource
from ..errors import (
    ClockDriftError,
    ConflictStateError,
    InvalidParameterError,
    PayloadLimitError,
    SyncAbortedError,
    TransportRequiredError,
)
from ..protocol.graph import DependencyGraph
from ..protocol.hlc import HLC_MAX, HybridLogicalClock, wall_of
from ..protocol.wire import META_FIELDS, ModelPayload, SyncManifest, SyncRecord, is_text
from .budget import Budget, record_size
from .pipeline import PullPipeline, settles
from .protocols import Cursor, DatabaseSyncStorage, SyncLock, Transport
from .results import DatabaseResult, SyncPhase, SyncStage

MiB = 1024 * 1024
READ_CHUNK = 1000
"""Rows fetched per storage call while filling a byte-only budget."""
COMMIT_INTERVAL = 0.25
"""Seconds one write transaction may span consecutive pulled rounds. Each commit writes every
page it dirtied, and a page of rows at random keys dirties leaves all over the tables: committing
a few pages at once writes far less. Each round stays atomic (its checkpoint commits with its
rows); other writers wait at most this long more, and a crash or a round that fails (a bad
answer, a resolver that raises) undoes at most this much work besides its own."""

FOLLOW_UP_ROUNDS = 2
"""Rounds a sync may run after the first complete answer that carried changes: enough to push what
applying it produced (a merged row, a cascade) and to take the answer to that. Past them, changes
other writers keep making wait for the next sync, so that ``sync()`` returns under any load."""

PhaseCallback = Callable[[SyncPhase], None]
ProgressCallback = Callable[[SyncStage, int, int], None]


class DatabaseEngine:
    """One node's sync engine: ``sync()`` as a client, ``process()`` as a server."""

    def __init__(
        self,
        storage: DatabaseSyncStorage,
        graph: DependencyGraph,
        clock: HybridLogicalClock,
        node_id: str,
        *,
        batch_bytes: int | None = 16 * MiB,
        batch_size: int | None = None,
        clock_drift_max: int | None = 300,
        identity_field: str = "id",
        lock: SyncLock | None = None,
        on_complete: Callable[[DatabaseResult], None] | None = None,
        on_phase: PhaseCallback | None = None,
        payload_bytes_max: int | None = None,
        payload_records_max: int | None = None,
        progress: ProgressCallback | None = None,
        reconciler: PayloadReconciler | None = None,
        transaction: Callable[[], AbstractContextManager[Any]] = nullcontext,
        transport: Transport | None = None,
        max_rounds: int = 10_000,
    ) -> None:
        _require(all(callable(getattr(storage, name, None)) for name in _STORAGE_METHODS),
                 "storage must implement DatabaseSyncStorage")
        _require(isinstance(graph, DependencyGraph), "graph must be a DependencyGraph")
        _require(isinstance(clock, HybridLogicalClock), "clock must be a HybridLogicalClock")
        _require(isinstance(node_id, str) and bool(node_id), "node_id must be a non-empty string")
        _require(_positive_or_none(batch_bytes), "batch_bytes must be a positive integer or None")
        _require(_positive_or_none(batch_size), "batch_size must be a positive integer or None")
        _require(clock_drift_max is None or (_is_int(clock_drift_max) and clock_drift_max >= 0),
                 "clock_drift_max must be a non-negative integer (seconds) or None")
        _require(isinstance(identity_field, str) and bool(identity_field), "identity_field must be a non-empty string")
        _require(lock is None or isinstance(lock, SyncLock), "lock must implement SyncLock (acquire, hold, release, update_phase)")
        for name, callback in (("on_complete", on_complete), ("on_phase", on_phase), ("progress", progress),
                               ("transaction", transaction)):
            _require(callback is None or callable(callback), f"{name} must be callable")
        _require(_positive_or_none(payload_bytes_max), "payload_bytes_max must be a positive integer or None")
        _require(_positive_or_none(payload_records_max), "payload_records_max must be a positive integer or None")
        _require(reconciler is None or isinstance(reconciler, PayloadReconciler), "reconciler must be a PayloadReconciler")
        _require(transport is None or callable(getattr(transport, "exchange", None)), "transport must have exchange(manifest)")
        _require(_is_int(max_rounds) and max_rounds > 0, "max_rounds must be a positive integer")
        self.storage = storage
        self.graph = graph
        self.clock = clock
        self.node_id = node_id
        self.batch_bytes = batch_bytes
        self.batch_size = batch_size
        self.clock_drift_max = clock_drift_max
        self.identity_field = identity_field
        self.lock = lock
        self.on_complete = on_complete
        self.on_phase = on_phase
        self.payload_bytes_max = payload_bytes_max
        self.payload_records_max = payload_records_max
        self.progress = progress
        self.reconciler = reconciler or PayloadReconciler()
        self.transaction = transaction
        self.transport = transport
        self.max_rounds = max_rounds
        self._order = graph.sync_order()

    # ------------------------------------------------------------------ shared

    def check_drift(self, manifest: SyncManifest) -> None:
        """Refuse a manifest whose sender's wall clock is too far from ours (PROTOCOL.md 6)."""
        if self.clock_drift_max is None or manifest.node_time == 0:
            return
        ours = self.clock.wall_ms() // 1000
        if abs(ours - manifest.node_time) > self.clock_drift_max:
            raise ClockDriftError(
                f"clock drift of {abs(ours - manifest.node_time)} s with node {manifest.node_id!r} exceeds "
                f"{self.clock_drift_max} s (our clock: {ours}, theirs: {manifest.node_time}, unix seconds)"
            )

    def check_stamps(self, manifest: SyncManifest) -> None:
        """As a server, refuse stamps from further ahead of our clock than the drift allows: one such
        stamp would drag the clock of every node into the future for good."""
        if self.clock_drift_max is None:
            return
        ours = self.clock.wall_ms() // 1000
        newest = wall_of(manifest.max_stamp()) // 1000
        if newest - ours > self.clock_drift_max:
            raise ClockDriftError(
                f"node {manifest.node_id!r} sent a stamp {newest - ours} s ahead of our clock, over "
                f"{self.clock_drift_max} s (our clock: {ours}, the stamp's: {newest}, unix seconds)"
            )

    def _accept(self, manifest: SyncManifest) -> None:
        """Verify the checksum and the clocks; then move our clock past everything the manifest carries
        (called inside the round's transaction, so a round that fails later leaves the clock too)."""
        manifest.verify_checksum()
        self.check_drift(manifest)
        newest = manifest.max_stamp()
        if newest > self.clock.last:  # already past it: moving the clock anyway would write for nothing
            self.clock.receive(newest)

    def _manifest(self, checkpoint: int, payloads: list[ModelPayload], after_keys: dict[str, dict], has_more: bool) -> SyncManifest:
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
            self.lock.update_phase(phase.value)
        if self.on_phase is not None:
            self.on_phase(phase)

    def _report(self, stage: SyncStage, current: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, current, total)

    def _invalid_records(self, payload: ModelPayload) -> dict[str, str]:
        """Records this node cannot store as sent: key -> reason. Field names are only compared, never used in SQL.
        Then the storage, if it can tell, names the records holding a value their column cannot take."""
        known = self._fields(payload.model_label)
        problems = {} if _all_storable(payload.records, self.identity_field, known) else \
            _record_problems(payload, self.identity_field, known)
        check = getattr(self.storage, "invalid_values", None)
        if callable(check) and len(problems) < len(payload.records):
            rest = {k: r for k, r in payload.records.items() if k not in problems} if problems else payload.records
            problems.update(check(payload.model_label, rest))
        return problems

    def _fields(self, label: str) -> frozenset[str] | None:
        fields = getattr(self.storage, "fields", None)
        return fields(label) if callable(fields) else None

    # ------------------------------------------------------------------ server

    def process(self, incoming: SyncManifest) -> tuple[SyncManifest, DatabaseResult]:
        """Answer one client round (PROTOCOL.md 7). Raises a ``SyncAbortedError`` subclass to refuse it.

        A change that would leave a FOREIGN KEY pointing at nothing (a child of a
        parent deleted meanwhile, or the delete of a parent that still has children)
        is refused per key: the round is rolled back and answered again without it.

        The answer is first assembled counting records only, and kept if its
        whole sealed text fits ``batch_bytes`` (then its records do too). Only
        a page that does not is assembled again measuring each record: sizing
        every record costs as much as encoding the page a second time.
        """
        refused: dict[tuple[str, str], str] = {}
        bytes_max: int | None = None
        while True:
            try:
                return self._process(incoming, refused, bytes_max)
            except _BrokenReferences as broken:
                if broken.keys.keys() <= refused.keys():
                    raise SyncAbortedError(f"foreign keys stay broken after refusing {len(refused)} change(s)") from None
                refused.update(broken.keys)
            except _Oversized:
                bytes_max = self.batch_bytes

    def _process(
        self, incoming: SyncManifest, refused: dict[tuple[str, str], str], bytes_max: int | None
    ) -> tuple[SyncManifest, DatabaseResult]:
        result = DatabaseResult()
        for (label, key), message in refused.items():
            result.errors.append({"key": key, "model_label": label, "message": message})
        for payload in incoming.payloads:
            if payload.model_label not in self.graph:
                for key in [*payload.records, *payload.deletes]:
                    result.errors.append({"key": key, "model_label": payload.model_label,
                                          "message": f"unknown model label {payload.model_label!r}"})
        with self.transaction():
            self.check_stamps(incoming)
            self._accept(incoming)
            self._report(SyncStage.VALIDATE, 1, 1)
            # A round that brings nothing stores nothing: it needs no new stamp, and taking one would
            # write to the database on every idle poll.
            now = self.clock.now() if incoming.change_count else self.clock.last
            budget = Budget(self.batch_size, bytes_max)
            served = [self._serve_records(label, incoming, budget, now, result, refused) for label in self._order]
            has_more = any(model.cut for model in served)
            payloads: list[ModelPayload] = []
            after_keys: dict[str, dict] = {}
            for model in served:
                model.deletes = self._tombstones_for(model, incoming, has_more)
                if model.records or model.deletes:
                    payloads.append(ModelPayload(model.label, model.records, model.deletes))
                if has_more and model.position is not None:
                    after_keys[model.label] = model.position.to_wire()
            activity = incoming.change_count > 0 or any(payloads)
            checkpoint = self._response_checkpoint(incoming, payloads, has_more, activity, now)
            if incoming.change_count:
                self._check_references(incoming)
            response = self._manifest(checkpoint, payloads, after_keys, has_more)
            if bytes_max is None and self.batch_bytes is not None and response.covered_size > self.batch_bytes:
                raise _Oversized
        result.checkpoint = checkpoint
        result.rounds = 1
        response.errors = list(result.errors)
        if self.on_complete is not None:
            self._report(SyncStage.CALLBACK, 0, 1)
            self.on_complete(result)
            self._report(SyncStage.CALLBACK, 1, 1)
        return response, result

    def _response_checkpoint(
        self, incoming: SyncManifest, payloads: list[ModelPayload], has_more: bool, activity: bool, now: int
    ) -> int:
        """While paging the checkpoint stays put (the cursors move); a complete answer carries our clock.

        ``now`` was taken inside the write transaction, so every row stored with
        a smaller stamp is either in this answer, was sent by this client, or
        is at or below its checkpoint.
        """
        if has_more:
            return incoming.checkpoint
        return max(incoming.checkpoint, now)

    def _serve_records(
        self,
        label: str,
        incoming: SyncManifest,
        budget: Budget,
        now: int,
        result: DatabaseResult,
        refused: dict[tuple[str, str], str],
    ) -> _ServedModel:
        raw_cursor = incoming.after_keys.get(label)
        cursor = Cursor.from_wire(raw_cursor) if raw_cursor else None
        model = _ServedModel(label, cursor)
        payload = incoming.payload(label)
        if payload is not None:
            model.sent_keys = set(payload.records) | set(payload.deletes)
            self._apply_incoming(payload, incoming.checkpoint, now, model, budget, result, refused)
        position = cursor
        while not budget.exhausted:
            remaining = budget.remaining_records()
            limit = READ_CHUNK if remaining is None else min(remaining + 1, READ_CHUNK)
            rows = self.storage.get_changed_since(label, incoming.checkpoint, after=position, limit=limit)
            fresh = {key: record for key, record in rows if key not in model.sent_keys}
            if budget.take_all(fresh.values()):
                model.records.update(fresh)
            else:
                for key, record in rows:
                    if key not in model.sent_keys:
                        if not budget.take_record(record):
                            model.cut = True
                            return model
                        model.records[key] = record
                    position = model.position = Cursor(record.last_modified, key)
            if rows:
                key, record = rows[-1]
                position = model.position = Cursor(record.last_modified, key)
            if len(rows) < limit:
                return model
        # Is anything left to send? Not the rows the client sent: one more row than those is enough to tell.
        left = self.storage.get_changed_since(label, incoming.checkpoint, after=position, limit=len(model.sent_keys) + 1)
        model.cut = any(key not in model.sent_keys for key, _record in left)
        return model

    def _apply_incoming(
        self,
        payload: ModelPayload,
        checkpoint: int,
        now: int,
        model: _ServedModel,
        budget: Budget,
        result: DatabaseResult,
        refused: dict[tuple[str, str], str],
    ) -> None:
        label = payload.model_label
        problems = self._invalid_records(payload)
        for key, message in problems.items():
            result.errors.append({"key": key, "model_label": label, "message": message})
        skip = problems.keys() | {key for refused_label, key in refused if refused_label == label}
        clean = ModelPayload(
            label,
            {k: r for k, r in payload.records.items() if k not in skip},
            {k: stamp for k, stamp in payload.deletes.items() if k not in skip},
        )
        stored = self.storage.get_records(label, [*clean.records, *clean.deletes])
        # Whether the client has seen a row is a matter of delivery (received_at); which write wins,
        # a delete's included, is decided by the writes' own stamps alone.
        local = {key: _own_stamps(record) for key, record in stored.items()}
        outcome = self.reconciler.reconcile(
            clean, local, checkpoint, unsynced=lambda key, _record: stored[key].last_modified > checkpoint
        )
        self._report(SyncStage.CLASSIFY, len(clean), len(clean))
        created = set(outcome.created)
        revived, stale = self._over_tombstones(label, {k: r for k, r in outcome.to_upsert.items() if k in created})
        self.storage.upsert_many(label, revived, received_at=now, guard=False)
        # Everything else was decided against the stored rows inside this same transaction: a row the
        # client saw at its checkpoint is superseded by its edit, a conflict by its resolution. Guarding
        # these against our received_at would drop edits whose stamps predate our storing the row.
        self.storage.upsert_many(
            label, {k: r for k, r in outcome.to_upsert.items() if k not in created}, received_at=now, guard=False
        )
        self.storage.delete_many(label, outcome.to_delete, received_at=now, guard=False)
        self._renew_tombstones(label, clean.deletes, local, now)
        self._report(SyncStage.MUTATE, len(outcome.to_upsert) + len(outcome.to_delete), len(clean))
        result.merge_reconciliation(outcome)
        result.add("deleted", label, list(outcome.to_delete))
        result.add("skipped", label, stale)
        for kind in ("created", "applied"):
            getattr(result, kind)[label] = [k for k in getattr(result, kind).get(label, []) if k not in stale]
        answers = dict(outcome.response_records)
        answers.update((key, record) for key, record in revived.items() if not _same_record(record, outcome.to_upsert[key]))
        for key, record in answers.items():
            budget.take_record(record)
            model.records[key] = record
        model.stale_deletes = {key: stamp for key, stamp in self.storage.get_tombstones(label, stale).items()
                               if key not in answers}

    def _over_tombstones(self, label: str, records: dict[str, SyncRecord]) -> tuple[dict[str, SyncRecord], list[str]]:
        """Split rows new to us into those to store and the keys of stale ones (7.6, by the writes' own stamps).

        A row we hold a tombstone for comes back only if it is newer than the delete, and then
        joined with what the delete erased (:func:`join_fields`); an older one is stale, and its
        values join what the tombstone keeps. So the row a later edit brings back holds every
        field's newest value, whichever reached us first, the delete or an older edit.
        """
        tombstones = self.storage.get_tombstones(label, records) if records else {}
        if not tombstones:
            return records, []
        erased = self.storage.get_buried(label, tombstones)
        revived: dict[str, SyncRecord] = {}
        stale: dict[str, SyncRecord] = {}
        for key, record in records.items():
            joined = join_fields(erased[key], record) if key in erased else record
            if key not in tombstones or _own_stamps(record).last_modified > tombstones[key]:
                revived[key] = joined
            else:
                stale[key] = joined
        if stale:
            self.storage.keep_buried(label, stale)
        return revived, list(stale)

    def _check_references(self, incoming: SyncManifest) -> None:
        """Before the round commits: a FOREIGN KEY left pointing at nothing names the incoming change to refuse."""
        broken: dict[tuple[str, str], str] = {}
        for label, key, parent_label, parent_key in self._reference_violations(incoming):
            sent = incoming.payload(label)
            parent = incoming.payload(parent_label) if parent_label else None
            if sent is not None and key in sent.records:
                broken[(label, key)] = f"refers to {parent_label} {parent_key!r}, which does not exist (deleted?)"
            elif parent is not None and parent_key in parent.deletes:
                broken[(parent_label, parent_key)] = f"cannot be deleted: {label} {key!r} still refers to it"
            else:
                raise SyncAbortedError(f"{label} {key!r} refers to a missing {parent_label} {parent_key!r}")
        if broken:
            raise _BrokenReferences(broken)

    def _renew_tombstones(self, label: str, deletes: dict[str, int], local: dict[str, SyncRecord], now: int) -> None:
        """A client deleted a row we had already deleted, later than our tombstone (the row was
        re-created there in between): our tombstone takes the newer delete, so an older write
        arriving afterwards cannot bring the row back."""
        absent = [key for key in deletes if key not in local]
        if not absent:
            return
        ours = self.storage.get_tombstones(label, absent)
        newer = {key: deletes[key] for key in absent if key in ours and ours[key] < deletes[key]}
        self.storage.delete_many(label, newer, received_at=now, guard=False)

    def _tombstones_for(self, model: _ServedModel, incoming: SyncManifest, has_more: bool) -> dict[str, int]:
        """Tombstones in this answer's window, so paging sends each exactly once.

        Page windows are (previous cursor, new cursor]; a model without a new
        cursor sends its tombstones on the final page.
        """
        if has_more and model.position is None:
            return dict(model.stale_deletes)
        low = model.cursor.timestamp if model.cursor is not None else incoming.checkpoint
        high = model.position.timestamp if has_more and model.position is not None else None
        window = {
            key: stamp
            for key, stamp in self.storage.get_deletes_since(model.label, low, until=high).items()
            if key not in model.sent_keys and key not in model.records
        }
        return {**window, **model.stale_deletes}

    # ------------------------------------------------------------------ client

    def sync(self, dry_run: bool = False) -> DatabaseResult:
        """Run rounds until the server's answer is complete and empty (PROTOCOL.md 11 waits for a quiet round
        instead; see :data:`FOLLOW_UP_ROUNDS` for the bound under load). ``dry_run`` pulls once and changes nothing."""
        if self.transport is None:
            raise TransportRequiredError("this engine has no transport: pass transport= to sync as a client")
        guard = self.lock.hold() if self.lock is not None else nullcontext()
        result = DatabaseResult(dry_run=dry_run)
        try:
            with guard:
                if dry_run:
                    self._dry_run(result)
                else:
                    self._rounds(result)
        except BaseException:
            self._phase(SyncPhase.FAILED)
            raise
        self._phase(SyncPhase.COMPLETE)
        if self.on_complete is not None:
            self._report(SyncStage.CALLBACK, 0, 1)
            self.on_complete(result)
            self._report(SyncStage.CALLBACK, 1, 1)
        return result

    def _rounds(self, result: DatabaseResult) -> None:
        rejected: dict[str, set[str]] = {}
        pipeline: PullPipeline | None = None
        opened: float | None = None  # when the transaction ``held`` began, while it is open
        follow_ups = 0
        try:
            with ExitStack() as held:  # the write transaction, held over consecutive pipelined rounds
                while True:
                    if result.rounds >= self.max_rounds:
                        raise SyncAbortedError(
                            f"sync did not settle after {self.max_rounds} rounds; the server keeps sending changes "
                            "(raise max_rounds if this is a very large initial sync)"
                        )
                    result.rounds += 1
                    self._phase(SyncPhase.COLLECTING)
                    pulled = pipeline.next() if pipeline is not None else None
                    if pulled is not None:
                        self._phase(SyncPhase.EXCHANGING)
                        checkpoint, request, response = pulled
                    else:
                        if pipeline is not None:
                            pipeline.close()
                            pipeline = None
                        checkpoint = self.storage.get_checkpoint()
                        request = self._collect(checkpoint, self.storage.get_after_keys(), rejected, result.errors)
                        self._phase(SyncPhase.EXCHANGING)
                        response = self.transport.exchange(request)  # type: ignore[union-attr]
                    self._phase(SyncPhase.RECONCILING)
                    complete = not request.has_more and not response.has_more
                    # An empty complete answer leaves this sync nothing to do: what is pending now was
                    # written while the round was in flight, and waits for the next sync.
                    last = complete and response.change_count == 0
                    if opened is None:
                        held.enter_context(self.transaction())
                        opened = time.monotonic()
                    self._accept(response)
                    following = None if pipeline or last else self._pull_ahead(request, response, checkpoint, rejected)
                    if following is not None:
                        pipeline = PullPipeline(self.transport, self._pull, *following)  # type: ignore[arg-type]
                    self._apply_response(request, response, checkpoint, result, rejected)
                    result.checkpoint = max(response.checkpoint, checkpoint)
                    if pipeline is not None and settles(response):
                        pipeline.close()
                        pipeline = None
                    remaining = COMMIT_INTERVAL - (time.monotonic() - opened)
                    if not (pipeline is not None and remaining > 0 and pipeline.ready(remaining)):
                        held.close()
                        opened = None
                    # A request sent ahead could not see what applying the rounds before it changed
                    # locally (an ON DELETE CASCADE, say): the sync ends only once that is pushed too.
                    if last and not (pulled is not None and self._collect(result.checkpoint, {}, rejected).payloads):
                        return
                    if complete and not last:
                        follow_ups += 1
                        if follow_ups > FOLLOW_UP_ROUNDS:
                            return
        finally:
            if pipeline is not None:
                pipeline.close()

    def _pull_ahead(
        self, request: SyncManifest, response: SyncManifest, checkpoint: int, rejected: dict[str, set[str]]
    ) -> tuple[int, SyncManifest] | None:
        """The next round's checkpoint and request, if the request is already fully determined: a pure pull.

        Only when this round pushed nothing and nothing is pending now, so the
        next request is the one ``_rounds`` would collect after applying this
        response (same checkpoint, the response's cursors, no payloads). A pull
        changes nothing on the server, so sending it while this response is
        applied keeps each round all-or-nothing and the paging exact-once.
        """
        if request.payloads or request.has_more:
            return None
        following = max(response.checkpoint, checkpoint)
        pull = self._collect(following, response.after_keys, rejected)
        if pull.payloads or pull.has_more:
            return None
        return following, pull

    def _pull(self, checkpoint: int, after_keys: dict[str, dict]) -> SyncManifest:
        """A request that pushes nothing (see :class:`PullPipeline`)."""
        return self._manifest(checkpoint, [], after_keys, False)

    def _collect(
        self, checkpoint: int, after_keys: dict[str, dict], rejected: dict[str, set[str]],
        errors: list[dict[str, str]] | None = None,
    ) -> SyncManifest:
        """Pending local changes, in dependency order, within the budget.

        A row no node could store as it is (a non-finite number, text that is not valid UTF-8,
        a value its column's type does not allow) is quarantined: left out, reported in
        ``errors`` once per sync, and still pending, so it goes as soon as the app fixes it.
        """
        budget = Budget(self.batch_size, self.batch_bytes)
        payloads = []
        has_more = False
        for label in self._order:
            skip = rejected.setdefault(label, set())
            deletes: dict[str, int] = {}
            for key, stamp in sorted(self.storage.get_pending_deletes(label).items(), key=lambda item: (item[1], item[0])):
                if key in skip:
                    continue
                if not budget.take(len(key) + 24):
                    has_more = True
                    break
                deletes[key] = stamp
            records: dict[str, SyncRecord] = {}
            position: Cursor | None = None
            while not has_more:
                rows = self.storage.get_pending(label, after=position, limit=READ_CHUNK)
                for key, message in self._invalid_records(ModelPayload(label, dict(rows))).items():
                    if key not in skip and errors is not None:
                        errors.append({"key": key, "model_label": label, "message": f"not pushed: {message}"})
                    skip.add(key)
                for key, record in rows:
                    position = Cursor(record.last_modified, key)
                    if key in skip:
                        continue
                    if not budget.take_record(record):
                        has_more = True
                        break
                    records[key] = SyncRecord(record.user_data(), record.timestamps)
                if len(rows) < READ_CHUNK:
                    break
            if records or deletes:
                payloads.append(ModelPayload(label, records, deletes))
        request = self._manifest(checkpoint, payloads, after_keys, has_more)
        self._check_limits(request)
        return request

    def unpushable(self) -> list[dict[str, str]]:
        """The pending rows a sync leaves out because no node could store them as they are
        (see :meth:`_collect`): ``{"key", "model_label", "message"}`` each, in sync order."""
        found = []
        for label in self._order:
            position: Cursor | None = None
            while True:
                rows = self.storage.get_pending(label, after=position, limit=READ_CHUNK)
                found += [{"key": key, "model_label": label, "message": message}
                          for key, message in self._invalid_records(ModelPayload(label, dict(rows))).items()]
                if len(rows) < READ_CHUNK:
                    break
                position = Cursor(rows[-1][1].last_modified, rows[-1][0])
        return found

    def _check_limits(self, request: SyncManifest) -> None:
        if self.payload_records_max is not None and request.change_count > self.payload_records_max:
            raise PayloadLimitError(
                f"manifest holds {request.change_count} records and tombstones, over payload_records_max="
                f"{self.payload_records_max}; set batch_size to page the push"
            )
        if self.payload_bytes_max is not None:
            size = sum(record_size(r) for p in request.payloads for r in p.records.values())
            if size > self.payload_bytes_max:
                raise PayloadLimitError(
                    f"manifest records take {size} bytes, over payload_bytes_max={self.payload_bytes_max}; "
                    "lower batch_bytes to page the push"
                )

    def _apply_response(
        self,
        request: SyncManifest,
        response: SyncManifest,
        checkpoint: int,
        result: DatabaseResult,
        rejected: dict[str, set[str]],
    ) -> None:
        """Acknowledge what the server took, apply what it sent, store the new checkpoint: all in one transaction."""
        refused = {str(error.get("key")) for error in response.errors}
        for payload in request.payloads:
            label = payload.model_label
            bad = refused & (set(payload.records) | set(payload.deletes))
            rejected.setdefault(label, set()).update(bad)
            self.storage.acknowledge(
                label,
                {key: record.last_modified for key, record in payload.records.items() if key not in bad},
                {key: stamp for key, stamp in payload.deletes.items() if key not in bad},
            )
            result.add("pushed", label, [key for key in [*payload.records, *payload.deletes] if key not in bad])
        result.errors.extend(response.errors)
        self._log_server_resolutions(request, response, checkpoint, result)
        self._phase(SyncPhase.COMMITTING)
        total = response.change_count
        done = 0
        for label in self._ordered_labels(response, result):
            payload = response.payload(label)
            assert payload is not None
            self._apply_payload(payload, checkpoint, result)
            done += len(payload)
            self._report(SyncStage.MUTATE, done, total)
        self._refuse_dangling_references(response)
        new_checkpoint = max(response.checkpoint, checkpoint)
        if (new_checkpoint, response.after_keys) != (checkpoint, self.storage.get_after_keys()):
            self.storage.save_checkpoint(new_checkpoint, response.after_keys)

    def _reference_violations(self, applied: SyncManifest) -> list[tuple[str, str, str | None, Any]]:
        """FOREIGN KEYs left pointing at nothing by applying ``applied``, if the storage can tell."""
        check = getattr(self.storage, "reference_violations", None)
        if not callable(check) or not applied.change_count:
            return []
        written = {payload.model_label: payload.records.keys() for payload in applied.payloads}
        deleted = {payload.model_label: payload.deletes.keys() for payload in applied.payloads}
        return check(written, deleted)

    def _refuse_dangling_references(self, response: SyncManifest) -> None:
        """The server's answer would leave a local FOREIGN KEY pointing at nothing (typically: it deleted
        a parent a pending local row still refers to). Nothing of the round is applied; the app decides."""
        dangling = self._reference_violations(response)
        if dangling:
            shown = "; ".join(f"{label} {key!r} refers to {parent} {parent_key!r}"
                              for label, key, parent, parent_key in dangling[:5])
            raise ConflictStateError(
                f"the server's changes would leave {len(dangling)} local row(s) referring to deleted rows: {shown}. "
                "Delete or re-parent those rows, then sync again"
            )

    def _log_server_resolutions(
        self, request: SyncManifest, response: SyncManifest, checkpoint: int, result: DatabaseResult
    ) -> None:
        """A record we pushed came back with other values in fields we changed: the server's resolver
        replaced our edits there. (Fields only the other side changed merged cleanly: no conflict.)
        Or it came back deleted: a newer delete beat our edit."""
        for sent_payload in request.payloads:
            returned_payload = response.payload(sent_payload.model_label)
            if returned_payload is None:
                continue
            for key in sent_payload.records.keys() & returned_payload.deletes.keys():
                self._log_discarded_edit(sent_payload.model_label, key, sent_payload.records[key],
                                         returned_payload.deletes[key], checkpoint, result)
            for key, returned in returned_payload.records.items():
                sent = sent_payload.records.get(key)
                if sent is None:
                    continue
                clashes = [
                    FieldConflict(name, sent.data.get(name), returned.data.get(name),
                                  sent.timestamps.get(name, 0), returned.timestamps.get(name, 0))
                    for name in sorted((set(sent.data) | set(returned.data)) - META_FIELDS)
                    if sent.timestamps.get(name, 0) > checkpoint and sent.data.get(name) != returned.data.get(name)
                ]
                if clashes:
                    conflict = RecordConflict(key, sent_payload.model_label, ConflictType.BOTH_MODIFIED, clashes, sent, returned)
                    result.conflict_log.append(ConflictEntry(conflict, ResolutionSource.REMOTE))
                    result.add("conflicts", sent_payload.model_label, [key])

    def _ordered_labels(self, response: SyncManifest, result: DatabaseResult) -> list[str]:
        present = {payload.model_label for payload in response.payloads}
        for label in sorted(present - self.graph.labels):
            payload = response.payload(label)
            assert payload is not None
            for key in [*payload.records, *payload.deletes]:
                result.errors.append({"key": key, "model_label": label, "message": f"unknown model label {label!r}"})
        return [label for label in self._order if label in present]

    def _apply_payload(self, payload: ModelPayload, checkpoint: int, result: DatabaseResult) -> None:
        """Apply one server payload; rows with pending local changes go through the resolver."""
        label = payload.model_label
        problems = self._invalid_records(payload)
        for key, message in problems.items():
            result.errors.append({"key": key, "model_label": label, "message": message})
        records = payload.records
        if problems:
            records = {key: record for key, record in records.items() if key not in problems}
        keys = [*records, *payload.deletes]
        pending = self.storage.get_pending_keys(label, keys)
        local = self.storage.get_records(label, [key for key in keys if key in pending]) if pending else {}
        clean_records = {k: r for k, r in records.items() if k not in pending} if pending else records
        clean_deletes = {k: s for k, s in payload.deletes.items() if k not in local}
        # Rows without pending local changes take the server's answer as it is: the server already
        # reconciled it, and a guard here would keep a row the server's resolver replaced by an older one.
        self.storage.upsert_many(label, clean_records, guard=False)
        self.storage.delete_many(label, clean_deletes, guard=False)
        result.add("applied", label, list(clean_records))
        result.add("deleted", label, list(clean_deletes))
        self._report(SyncStage.CLASSIFY, len(keys), len(keys))
        if pending:
            self._merge_pending(label, records, payload.deletes, pending, local, checkpoint, result)

    def _merge_pending(
        self,
        label: str,
        records: dict[str, SyncRecord],
        deletes: dict[str, int],
        pending: set[str],
        local: dict[str, SyncRecord],
        checkpoint: int,
        result: DatabaseResult,
    ) -> None:
        """The server changed rows we changed too and have not pushed yet: resolve, keep the result pending."""
        contested = ModelPayload(
            label,
            {k: r for k, r in records.items() if k in local},
            {k: s for k, s in deletes.items() if k in local},
        )
        outcome = self.reconciler.reconcile(contested, local, checkpoint, unsynced=lambda _key, _record: True)
        # A delete newer than a pending edit wins, but the edit goes to the server first: it keeps the
        # fields of deleted rows for an edit that brings one back, and answers with the delete again
        # (the device then drops the row and logs the conflict, see _log_server_resolutions).
        beaten = sorted(key for key in contested.deletes.keys() & outcome.to_delete.keys() if key not in outcome.conflicts)
        for key in beaten:
            del outcome.to_delete[key]
        result.add("skipped", label, beaten)
        self.storage.upsert_many(label, outcome.to_upsert, guard=False)
        self.storage.delete_many(label, outcome.to_delete, guard=False)
        self.storage.mark_pending(label, outcome.response_records)
        result.merge_reconciliation(outcome)
        result.add("deleted", label, list(outcome.to_delete))
        deleted_here = [key for key in records if key in pending and key not in local]
        tombstones = self.storage.get_tombstones(label, deleted_here) if deleted_here else {}
        for key in deleted_here:
            self._modify_vs_local_delete(label, key, records[key], tombstones.get(key, 0), result)

    @staticmethod
    def _log_discarded_edit(
        label: str, key: str, edited: SyncRecord, tombstone: int, checkpoint: int, result: DatabaseResult
    ) -> None:
        """Log that a delete beat a local edit the server had not taken yet: each field the edit
        changed, with the value it lost. (Against a server that stamps deletes with its own clock,
        such a delete may even be older than the edit; the log is how the app finds out.)"""
        clashes = [FieldConflict(name, edited.data.get(name), None, stamp, tombstone)
                   for name, stamp in sorted(edited.timestamps.items()) if stamp > checkpoint and name not in META_FIELDS]
        conflict = RecordConflict(key, label, ConflictType.DELETE_VS_MODIFY, clashes, edited, None)
        result.conflict_log.append(ConflictEntry(conflict, ResolutionSource.REMOTE))
        result.add("conflicts", label, [key])

    def _modify_vs_local_delete(
        self, label: str, key: str, remote: SyncRecord, tombstone: int, result: DatabaseResult
    ) -> None:
        """The server modified a row we deleted and have not pushed yet.

        As with an incoming tombstone (PROTOCOL.md 8), a delete at least as new as
        the remote row simply wins; only an older delete is a conflict.
        """
        if tombstone >= remote.last_modified:
            result.add("skipped", label, [key])
            return
        conflict = RecordConflict(key, label, ConflictType.MODIFY_VS_DELETE, [], None, remote)
        try:
            resolution = self.reconciler.resolver.resolve(conflict)
        except Exception as exc:  # a user resolver may raise anything: one error for this key
            result.errors.append({"key": key, "model_label": label, "message": f"resolver failed: {type(exc).__name__}: {exc}"})
            return
        if resolution.delete or resolution.record is None:
            result.add("skipped", label, [key])
        else:
            self.storage.upsert_many(label, {key: resolution.record}, guard=False)
            result.add("applied", label, [key])
        result.add("conflicts", label, [key])
        result.conflict_log.append(ConflictEntry(conflict, resolution.source))

    def _dry_run(self, result: DatabaseResult) -> None:
        """Report what a sync would push and apply, without pushing or writing anything."""
        result.rounds = 1
        self._phase(SyncPhase.COLLECTING)
        checkpoint = self.storage.get_checkpoint()
        would_push = self._collect(checkpoint, self.storage.get_after_keys(), {}, result.errors)
        for payload in would_push.payloads:
            result.add("pushed", payload.model_label, [*payload.records, *payload.deletes])
        self._phase(SyncPhase.EXCHANGING)
        response = self.transport.exchange(self._manifest(checkpoint, [], self.storage.get_after_keys(), False))  # type: ignore[union-attr]
        response.verify_checksum()
        self.check_drift(response)
        self._phase(SyncPhase.RECONCILING)
        for label in self._order:
            payload = response.payload(label)
            if payload is None:
                continue
            local = self.storage.get_records(label, [*payload.records, *payload.deletes])
            pending = self.storage.get_pending_keys(label, local)
            outcome = self.reconciler.reconcile(payload, local, checkpoint, unsynced=lambda key, _r: key in pending)
            result.merge_reconciliation(outcome)
            result.add("deleted", label, list(outcome.to_delete))
        result.checkpoint = checkpoint


class _BrokenReferences(Exception):
    """Internal: the round would commit dangling foreign keys; roll back and refuse these changes."""

    def __init__(self, keys: dict[tuple[str, str], str]) -> None:
        super().__init__(f"{len(keys)} change(s) break foreign keys")
        self.keys = keys


class _Oversized(Exception):
    """Internal: an answer assembled by record count is over ``batch_bytes``; assemble it again measuring records."""


class _ServedModel:
    """What ``process`` assembled for one model of the answer."""

    def __init__(self, label: str, cursor: Cursor | None) -> None:
        self.label = label
        self.cursor = cursor
        self.position: Cursor | None = cursor
        self.records: dict[str, SyncRecord] = {}
        self.deletes: dict[str, int] = {}
        self.stale_deletes: dict[str, int] = {}
        """Tombstones that beat a record the client sent: they go back to it."""
        self.sent_keys: set[str] = set()
        self.cut = False


_STORAGE_METHODS = (
    "get_changed_since", "get_deletes_since", "get_records", "upsert_many", "delete_many",
    "get_checkpoint", "save_checkpoint", "get_after_keys",
)


def _same_record(a: SyncRecord, b: SyncRecord) -> bool:
    return a.data == b.data and a.timestamps == b.timestamps


def _own_stamps(record: SyncRecord) -> SyncRecord:
    """``record`` as its writes stamped it, without the server's receive time."""
    return SyncRecord(record.data, record.timestamps) if record.received_at else record


def _record_problems(payload: ModelPayload, identity_field: str, known: frozenset[str] | None) -> dict[str, str]:
    """Record by record: key -> why this node cannot store it as sent."""
    problems: dict[str, str] = {}
    for key, record in payload.records.items():
        identity = record.data.get(identity_field, key)
        if identity != key:
            problems[key] = f"{identity_field} {identity!r} does not match the record key"
            continue
        if record.is_ghost:
            problems[key] = "record has no timestamps (ghost record)"
            continue
        oversized = [name for name, value in record.data.items() if _out_of_range(value)]
        if oversized:
            problems[key] = f"integer out of the 64-bit range in field(s) {', '.join(sorted(oversized)[:5])}"
            continue
        unfit = _unfit_values(record.data)
        if unfit:
            problems[key] = unfit
            continue
        if known is not None:
            unknown = (set(record.data) | set(record.timestamps)) - known - META_FIELDS
            if unknown:
                names = ", ".join(sorted(repr(name)[:40] for name in unknown)[:5])
                problems[key] = f"unknown field(s) for {payload.model_label}: {names}"
    return problems


def _all_storable(records: dict[str, SyncRecord], identity_field: str, known: frozenset[str] | None) -> bool:
    """Whether :func:`_record_problems` would find nothing: the same checks, made for a whole payload at once.
    False only means "look record by record"."""
    datas = [record.data for record in records.values()]
    stamps = [record.timestamps for record in records.values()]
    if not all(stamps) or list(map(dict.get, datas, repeat(identity_field), records)) != list(records):
        return False
    values = list(chain.from_iterable(map(dict.values, datas)))
    types = list(map(type, values))
    kinds = set(types)
    if not kinds <= _JSON_TYPES:
        return False  # e.g. an int subclass (never from JSON): leave it to the exact checks
    integers = list(compress(values, map(is_, types, repeat(int))))
    if integers and (min(integers) < -HLC_MAX - 1 or max(integers) > HLC_MAX):
        return False
    if float in kinds and not isfinite(sum(compress(values, map(is_, types, repeat(float))))):
        return False  # a NaN or an infinity (or finite numbers whose sum is too large: the exact check tells)
    if str in kinds and not is_text("".join(compress(values, map(is_, types, repeat(str))))):
        return False
    if not kinds.isdisjoint(_CONTAINERS) and not _encodable(list(compress(values, map(_CONTAINERS.__contains__, types)))):
        return False
    if known is None:
        return True
    names = set(chain.from_iterable(datas))
    names.update(chain.from_iterable(stamps))
    return names <= known | META_FIELDS


_JSON_TYPES = frozenset({str, int, float, bool, type(None), dict, list})
_CONTAINERS = frozenset({dict, list})
NON_FINITE = "non-finite number (NaN or Infinity, which JSON cannot carry)"
LONE_SURROGATE = "text with a lone surrogate (not valid Unicode)"


def _unfit_values(data: dict[str, Any]) -> str | None:
    """Why no node may store or send these values, naming the fields: a non-finite number, or text
    with a lone surrogate, as a value or anywhere inside one. None if there is neither."""
    found: dict[str, list[str]] = {}
    for name, value in data.items():
        reason = _value_problem(value)
        if reason is not None:
            found.setdefault(reason, []).append(repr(name)[:40])
    return "; ".join(f"{reason} in field(s) {', '.join(sorted(names)[:5])}" for reason, names in found.items()) or None


def _value_problem(value: object) -> str | None:
    """:data:`NON_FINITE` or :data:`LONE_SURROGATE` if ``value`` is or holds one (looked for without
    recursion: nesting is as deep as the parser allowed), else None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not isfinite(item):
                return NON_FINITE
        elif isinstance(item, str):
            if not is_text(item):
                return LONE_SURROGATE
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _encodable(containers: list[Any]) -> bool:
    """Whether the objects and lists are strict JSON that UTF-8 can encode, in one C-level pass
    (False also for what is too deep or not JSON at all: the exact check then looks)."""
    try:
        json.dumps(containers, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        return False
    return True


def _out_of_range(value: object) -> bool:
    """An integer SQLite cannot store (it has signed 64-bit integers)."""
    return _is_int(value) and not -HLC_MAX - 1 <= value <= HLC_MAX  # type: ignore[operator]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidParameterError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_or_none(value: object) -> bool:
    return value is None or (_is_int(value) and value > 0)  # type: ignore[operator]

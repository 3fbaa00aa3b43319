"""The client side of the engine: ``sync()`` runs rounds until the server has nothing more (PROTOCOL.md 11).

The client pushes what its storage marks *pending* (a local change not yet
acknowledged) instead of "everything newer than the checkpoint" (PROTOCOL.md
14): a change the server acknowledged is never re-sent unless it changes
again, so a delete cannot livelock, and a write made during a round stays
pending whatever the new checkpoint is.

While the client pages through a large pull, a worker thread sends each pull
as soon as the answer before it arrives (``pipeline.py``), so the server reads
page n+1 while the client writes page n; answers are still accepted and
applied one round at a time, in order, on the sync's own thread, and rounds
whose answers keep arriving share one write transaction for up to
``COMMIT_INTERVAL`` (each round's checkpoint still commits with its rows).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

from ..conflict.reconciler import ConflictEntry
from ..conflict.types import ConflictType, FieldConflict, RecordConflict, ResolutionSource
from ..errors import ConflictStateError, PayloadLimitError, SyncAbortedError, TransportRequiredError
from ..protocol.wire import META_FIELDS, AfterKeys, ModelPayload, SyncManifest, SyncRecord
from .base import EngineBase
from .budget import READ_CHUNK, Budget, record_size
from .pipeline import PullPipeline, settles
from .protocols import Cursor, Transport
from .results import DatabaseResult, SyncPhase, SyncStage, SyncStatus

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


class Syncing(EngineBase):
    """``sync``: the client's half of ``DatabaseEngine``."""


    def sync(self, dry_run: bool = False) -> DatabaseResult:
        """Run rounds until the server's answer is complete and empty (PROTOCOL.md 11 waits for a quiet round
        instead; see :data:`FOLLOW_UP_ROUNDS` for the bound under load). ``dry_run`` pulls once and changes nothing."""
        transport = self.transport
        if transport is None:
            raise TransportRequiredError("this engine has no transport: pass transport= to sync as a client")
        result = DatabaseResult(dry_run=dry_run)
        self._session = self.lock.acquire(self.node_id) if self.lock is not None else None
        status = SyncStatus.FAILED
        try:
            if dry_run:
                self._dry_run(result, transport)
            else:
                self._rounds(result, transport)
            self._phase(SyncPhase.COMPLETE)
            status = SyncStatus.SUCCEEDED
        except BaseException:
            self._phase(SyncPhase.FAILED)
            raise
        finally:
            if self.lock is not None and self._session is not None:
                self.lock.release(self._session, status, result)
            self._session = None
        if self.on_complete is not None:
            self._report(SyncStage.CALLBACK, 0, 1)
            self.on_complete(result)
            self._report(SyncStage.CALLBACK, 1, 1)
        return result

    def _rounds(self, result: DatabaseResult, transport: Transport) -> None:
        run = _Run(result, since=self.storage.get_checkpoint())
        rejected = run.rejected
        pipeline: PullPipeline | None = None
        opened: float | None = None  # when the transaction ``held`` began, while it is open
        follow_ups = 0
        try:
            with ExitStack() as held:  # the write transaction, held over consecutive pipelined rounds
                while True:
                    if result.rounds >= self.options.max_rounds:
                        raise SyncAbortedError(
                            f"sync did not settle after {self.options.max_rounds} rounds; the server keeps sending changes "
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
                        response = transport.exchange(request)
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
                        pipeline = PullPipeline(transport, self._pull, *following)
                    self._apply_response(request, response, checkpoint, run)
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

    def _pull(self, checkpoint: int, after_keys: AfterKeys) -> SyncManifest:
        """A request that pushes nothing (see :class:`PullPipeline`)."""
        return self._manifest(checkpoint, [], after_keys, False)

    def _collect(
        self, checkpoint: int, after_keys: AfterKeys, rejected: dict[str, set[str]],
        errors: list[dict[str, str]] | None = None,
    ) -> SyncManifest:
        """Pending local changes, in dependency order, within the budget.

        A row no node could store as it is (a non-finite number, text that is not valid UTF-8,
        a value its column's type does not allow) is quarantined: left out, reported in
        ``errors`` once per sync, and still pending, so it goes as soon as the app fixes it.

        The pending rows and tombstones are read in one transaction: another writer that deletes a
        key and creates it again meanwhile can never make it both a row and a tombstone in the
        request (which a server refuses whole).
        """
        with self.transaction():
            budget = Budget(self.options.batch_size, self.options.batch_bytes)
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
                        records[key] = SyncRecord(key, record.user_data(), record.timestamps)
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
        if self.options.payload_records_max is not None and request.change_count > self.options.payload_records_max:
            raise PayloadLimitError(
                f"manifest holds {request.change_count} records and tombstones, over payload_records_max="
                f"{self.options.payload_records_max}; set batch_size to page the push"
            )
        if self.options.payload_bytes_max is not None:
            size = sum(record_size(r) for p in request.payloads for r in p.records.values())
            if size > self.options.payload_bytes_max:
                raise PayloadLimitError(
                    f"manifest records take {size} bytes, over payload_bytes_max={self.options.payload_bytes_max}; "
                    "lower batch_bytes to page the push"
                )

    def _apply_response(self, request: SyncManifest, response: SyncManifest, checkpoint: int, run: _Run) -> None:
        """Acknowledge what the server took, apply what it sent, store the new checkpoint: all in one transaction."""
        result, rejected = run.result, run.rejected
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
        self._log_server_resolutions(request, response, checkpoint, run)
        self._phase(SyncPhase.COMMITTING)
        total = response.change_count
        done = 0
        for label in self._ordered_labels(response, result):
            answered = response.payload(label)
            assert answered is not None
            self._apply_payload(answered, checkpoint, result)
            done += len(answered)
            self._report(SyncStage.MUTATE, done, total)
        self._refuse_dangling_references(response)
        new_checkpoint = max(response.checkpoint, checkpoint)
        if (new_checkpoint, response.after_keys) != (checkpoint, self.storage.get_after_keys()):
            self.storage.save_checkpoint(new_checkpoint, response.after_keys)

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

    def _log_server_resolutions(self, request: SyncManifest, response: SyncManifest, checkpoint: int, run: _Run) -> None:
        """A record we pushed came back with other values in fields we changed: the server's resolver
        replaced our edits there. (Fields only the other side changed merged cleanly: no conflict.)
        Or it came back deleted: a newer delete beat our edit."""
        result = run.result
        for sent_payload in request.payloads:
            returned_payload = response.payload(sent_payload.model_label)
            if returned_payload is None:
                continue
            for key in sent_payload.records.keys() & returned_payload.deletes.keys():
                self._log_discarded_edit(sent_payload.model_label, key, sent_payload.records[key],
                                         returned_payload.deletes[key], run.since, result)
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
        for label in sorted(present - self.graph.known_models()):
            payload = response.payload(label)
            assert payload is not None
            for key in [*payload.records, *payload.deletes]:
                result.errors.append({"key": key, "model_label": label, "message": f"unknown model label {label!r}"})
        return [label for label in self._order if label in present]

    def _apply_payload(self, payload: ModelPayload, checkpoint: int, result: DatabaseResult) -> None:
        """Apply one server payload; rows with pending local changes go through the resolver."""
        label = payload.model_label
        payload = self._settle_overlaps(self._in_our_names(payload), result)
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
        # a key deleted here too stays pending: our delete may be the newer one, and must reach the server
        clean_deletes = {k: s for k, s in payload.deletes.items() if k not in pending} if pending else payload.deletes
        # Rows without pending local changes take the server's answer as it is: the server already
        # reconciled it, and a guard here would keep a row the server's resolver replaced by an older one.
        self.storage.upsert_many(label, clean_records, guard=False)
        self.storage.delete_many(label, clean_deletes, guard=False)
        result.add("applied", label, list(clean_records))
        result.add("deleted", label, list(clean_deletes))
        self._report(SyncStage.CLASSIFY, len(keys), len(keys))
        if pending:
            self._merge_pending(label, records, payload.deletes, pending, local, checkpoint, result)

    @staticmethod
    def _settle_overlaps(payload: ModelPayload, result: DatabaseResult) -> ModelPayload:
        """A key both in ``records`` and ``deletes`` (the existing server sends that, PROTOCOL.md 14) is
        settled by stamps, the same on every device: the tombstone wins when it is at least as new as
        the record's newest field stamp (when the server received the row does not count), otherwise
        the record brings the row back. The side that lost is counted as skipped."""
        both = payload.records.keys() & payload.deletes.keys()
        if not both:
            return payload
        records, deletes = dict(payload.records), dict(payload.deletes)
        for key in both:
            if deletes[key] >= max(records[key].timestamps.values(), default=0):
                del records[key]
            else:
                del deletes[key]
        result.add("skipped", payload.model_label, sorted(both))
        return ModelPayload(payload.model_label, records, deletes)

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
        beaten = sorted(key for key in contested.deletes.keys() & outcome.to_delete.keys() if key not in outcome.conflict_keys)
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

    def _dry_run(self, result: DatabaseResult, transport: Transport) -> None:
        """Report what a sync would push and apply, without pushing or writing anything."""
        result.rounds = 1
        self._phase(SyncPhase.COLLECTING)
        checkpoint = self.storage.get_checkpoint()
        would_push = self._collect(checkpoint, self.storage.get_after_keys(), {}, result.errors)
        for payload in would_push.payloads:
            result.add("pushed", payload.model_label, [*payload.records, *payload.deletes])
        self._phase(SyncPhase.EXCHANGING)
        response = transport.exchange(self._manifest(checkpoint, [], self.storage.get_after_keys(), False))
        response.verify_checksum()
        self.check_drift(response)
        self._phase(SyncPhase.RECONCILING)
        for label in self._order:
            answered = response.payload(label)
            if answered is None:
                continue
            local = self.storage.get_records(label, [*answered.records, *answered.deletes])
            pending = self.storage.get_pending_keys(label, local)
            outcome = self.reconciler.reconcile(answered, local, checkpoint, unsynced=_has_pending(pending))
            result.merge_reconciliation(outcome)
            result.add("deleted", label, list(outcome.to_delete))
        result.checkpoint = checkpoint


@dataclass
class _Run:
    """One sync: its result, the keys the server refused in it (not pushed again until the next sync),
    and the checkpoint it started from (the fields changed since then are the device's own edits)."""

    result: DatabaseResult
    since: int
    rejected: dict[str, set[str]] = field(default_factory=dict)


def _has_pending(pending: set[str]) -> Callable[[str, SyncRecord], bool]:
    """``unsynced`` for :meth:`PayloadReconciler.reconcile`: whether the key has a pending local change."""
    return lambda key, _record: key in pending

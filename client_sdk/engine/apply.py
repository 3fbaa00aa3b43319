"""Applying a server's answer on a client: acknowledge what it took, take what it sent, merge with
what is pending here, and log the conflicts a device should hear about (PROTOCOL.md 11.3)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..conflict.reconciler import ConflictEntry
from ..conflict.types import ConflictType, FieldConflict, RecordConflict, ResolutionSource
from ..errors import ConflictStateError
from ..protocol.wire import META_FIELDS, ModelPayload, SyncManifest, SyncRecord, record_error
from .base import EngineBase
from .protocols import FindsReferrers, HoldsBack, ReferenceViolation
from .results import DatabaseResult, SyncPhase, SyncStage

log = logging.getLogger("client_sdk.sync")


@dataclass
class SyncRun:
    """One sync: its result, the checkpoint it started from (the fields changed since then are the
    device's own edits), and the keys it does not push: refused by the server or quarantined in this
    sync, label -> keys, not pushed again until the next one."""

    result: DatabaseResult
    since: int
    unpushed: dict[str, set[str]] = field(default_factory=dict)


class Applying(EngineBase):
    """The part of ``sync`` that applies one round's answer, inside the round's transaction."""

    def _apply_response(self, request: SyncManifest, response: SyncManifest, checkpoint: int, run: SyncRun) -> None:
        """Acknowledge what the server took, apply what it sent, store the new checkpoint: all in one transaction."""
        result, unpushed = run.result, run.unpushed
        refused = {str(error.get("key")) for error in response.errors}
        bounced: dict[str, dict[str, SyncRecord]] = {}  # refused rows the answer sends back: see _give_way
        for payload in request.payloads:
            label = payload.model_label
            # a refused change whose row the answer deletes goes with the row (its refusal stays reported)
            bad = refused & (set(payload.records) | set(payload.deletes)) - _deletes(response, label).keys()
            unpushed.setdefault(label, set()).update(bad)
            returned = response.payload(label)
            if bad and returned is not None:
                bounced[label] = {key: payload.records[key] for key in bad & returned.records.keys() & payload.records.keys()}
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
        labels = self._ordered_labels(response, result)
        # deletes of rows already pending here before this answer is applied (the device's own changes)
        pending_before = {label: self.storage.get_pending_keys(label, deletes)
                          for label in labels if (deletes := _deletes(response, label))}
        for label, sent in bounced.items():
            self._give_way(label, sent, response, checkpoint, result)
        for label in labels:
            answered = response.payload(label)
            assert answered is not None
            self._apply_payload(answered, checkpoint, result, pending_before=pending_before.get(label, set()))
            done += len(answered)
            self._report(SyncStage.MUTATE, done, total)
        self._refuse_dangling_references(response)
        new_checkpoint = max(response.checkpoint, checkpoint)
        if (new_checkpoint, response.after_keys) != (checkpoint, self.storage.get_after_keys()):
            self.storage.save_checkpoint(new_checkpoint, response.after_keys)

    def _refuse_dangling_references(self, response: SyncManifest) -> None:
        """The server's answer would leave a local FOREIGN KEY pointing at nothing, which no consistent
        answer does once the rows with changes it had not taken went with their parents
        (:meth:`_remove_orphans`): a synced row whose parent it deleted without it, say. Nothing of the
        round is applied; the app decides."""
        dangling = self._reference_violations(response.payloads)
        if dangling:
            shown = "; ".join(f"{label} {key!r} refers to {parent} {parent_key!r}"
                              for label, key, parent, parent_key in dangling[:5])
            raise ConflictStateError(
                f"the server's changes would leave {len(dangling)} local row(s) referring to deleted rows: {shown}. "
                "Delete or re-parent those rows, then sync again"
            )

    def _log_server_resolutions(self, request: SyncManifest, response: SyncManifest, checkpoint: int, run: SyncRun) -> None:
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
            refused = run.unpushed.get(sent_payload.model_label, set())  # those give way later, if at all
            for key, returned in returned_payload.records.items():
                sent = sent_payload.records.get(key)
                if sent is not None and key not in refused:
                    self._log_replaced_edit(sent_payload.model_label, sent, returned, checkpoint, result)

    @staticmethod
    def _log_replaced_edit(label: str, sent: SyncRecord, returned: SyncRecord, checkpoint: int, result: DatabaseResult
                           ) -> None:
        """Log the fields of ``sent`` changed since ``checkpoint`` that ``returned`` replaced, if any."""
        clashes = [
            FieldConflict(name, sent.data.get(name), returned.data.get(name),
                          sent.timestamps.get(name, 0), returned.timestamps.get(name, 0))
            for name in sorted((set(sent.data) | set(returned.data)) - META_FIELDS)
            if sent.timestamps.get(name, 0) > checkpoint and sent.data.get(name) != returned.data.get(name)
        ]
        if clashes:
            conflict = RecordConflict(sent.key, label, ConflictType.BOTH_MODIFIED, clashes, sent, returned)
            result.conflict_log.append(ConflictEntry(conflict, ResolutionSource.REMOTE))
            result.add("conflicts", label, [sent.key])

    def _give_way(
        self, label: str, sent: dict[str, SyncRecord], response: SyncManifest, checkpoint: int, result: DatabaseResult
    ) -> None:
        """Refused changes whose rows the answer sends back (as the server holds them: it refused them for
        good) give way to them, unless they changed here again since; the lost edit is logged. Their rows
        are written before the rest of the answer (and again with it), so that none of its deletes finds
        them still referring to a parent they were refused under, to take them along."""
        answered = response.payload(label)
        pending = self.storage.get_pending_keys(label, sent) if sent and answered is not None else set()
        if answered is None or not pending:
            return
        self.storage.acknowledge(label, {key: sent[key].last_modified for key in pending}, {})
        replaced = sorted(pending - self.storage.get_pending_keys(label, pending))
        for key in replaced:
            self._log_replaced_edit(label, sent[key], answered.records[key], checkpoint, result)
        self._apply_payload(ModelPayload(label, {key: answered.records[key] for key in replaced}, {}), checkpoint,
                            DatabaseResult())  # what it reports is reported when the whole answer applies

    def _ordered_labels(self, response: SyncManifest, result: DatabaseResult) -> list[str]:
        """The answer's models this node tracks, in sync order. The others' rows are skipped: a device
        that starts tracking a model asks for its rows from the start (PROTOCOL.md 7's cursor)."""
        present = {payload.model_label for payload in response.payloads}
        for label in sorted(present - set(self._order)):
            payload = response.payload(label)
            assert payload is not None
            result.add("skipped", label, [*payload.records, *payload.deletes])
            log.info("skipped %d change(s) of %s, a model this device does not track", len(payload), label)
        return [label for label in self._order if label in present]

    def _retry_held(self, checkpoint: int, result: DatabaseResult) -> None:
        """Apply the records held back by earlier syncs that the database takes now (the app changed
        its schema, or the row in the way is gone), unless a newer version of the row is stored.

        A record whose parent row is gone by now would leave its FOREIGN KEY pointing at nothing
        and fail the commit of every sync: the try is undone and made again without such records,
        which stay held back."""
        if not isinstance(self.storage, HoldsBack):
            return
        held = {label: records for label in self._order if (records := self.storage.held_records(label))}
        orphans: set[tuple[str, str]] = set()
        while held:
            tried = DatabaseResult()
            payloads = [ModelPayload(label, records, {}) for label, records in held.items()]
            try:
                with self.transaction():
                    for payload in payloads:
                        self._apply_payload(payload, checkpoint, tried, guard=True)
                    dangling = self._reference_violations(payloads)
                    if dangling:
                        raise _Orphans(dangling)
            except _Orphans as found:
                orphaned = {(label, key): f"refers to {parent} {parent_key!r}, which this device does not have"
                            for label, key, parent, parent_key in found.violations if key in held.get(label, {})}
                if orphaned.keys() <= orphans:
                    raise ConflictStateError(f"held-back rows refer to missing rows: {found.violations[:5]}") from None
                orphans |= orphaned.keys()
                for (label, key), reason in orphaned.items():
                    self.storage.hold(label, {key: (held[label][key], reason)})
                held = {label: kept for label, records in held.items()
                        if (kept := {key: r for key, r in records.items() if (label, key) not in orphans})}
                continue
            result.absorb(tried)
            return

    def _apply_payload(
        self, payload: ModelPayload, checkpoint: int, result: DatabaseResult, *, guard: bool = False,
        pending_before: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        """Apply one server payload; rows with pending local changes go through the resolver. A record
        holding a value its column does not take is held back (PROTOCOL.md leaves it an error).

        A row the payload deletes that became a pending change only while this answer was being
        applied (not among ``pending_before``: an ON DELETE CASCADE of a parent the answer deleted
        first) is the server's to delete: its delete is applied as sent, and nothing is pushed for it."""
        label = payload.model_label
        payload = self._settle_overlaps(self._in_our_names(payload), result)
        problems = self._malformed(payload)
        for key, message in problems.items():
            result.errors.append(record_error(label, key, message))
        unfit = self._unfit(payload, problems)
        if unfit and isinstance(self.storage, HoldsBack):
            self.storage.hold(label, {key: (payload.records[key], message) for key, message in unfit.items()})
        else:
            result.errors.extend(record_error(label, key, message) for key, message in unfit.items())
        problems.update(unfit)
        records = payload.records
        if problems:
            records = {key: record for key, record in records.items() if key not in problems}
        keys = [*records, *payload.deletes]
        pending = self.storage.get_pending_keys(label, keys)
        if pending:
            pending -= {key for key in payload.deletes if key in pending and key not in pending_before}
        local = self.storage.get_records(label, [key for key in keys if key in pending]) if pending else {}
        clean_records = {k: r for k, r in records.items() if k not in pending} if pending else records
        # a key deleted here too stays pending: our delete may be the newer one, and must reach the server
        clean_deletes = {k: s for k, s in payload.deletes.items() if k not in pending} if pending else payload.deletes
        # Rows without pending local changes take the server's answer as it is: the server already
        # reconciled it, and a guard here would keep a row the server's resolver replaced by an older one.
        # (Held-back records tried again are guarded: a newer version of the row may be stored since.)
        not_written = set(self.storage.upsert_many(label, clean_records, guard=guard))
        self._remove_orphans(label, clean_deletes, result)
        self.storage.delete_many(label, clean_deletes, guard=False)
        result.add("applied", label, [key for key in clean_records if key not in not_written])
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
        log.warning("tolerated a server quirk: %d key(s) of %s came both as a row and as a deletion (e.g. %r); "
                    "settled by their stamps", len(both), payload.model_label, min(both))
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
        self._remove_orphans(label, outcome.to_delete, result)
        self.storage.delete_many(label, outcome.to_delete, guard=False)
        self.storage.mark_pending(label, outcome.response_records)
        result.merge_reconciliation(outcome)
        result.add("deleted", label, list(outcome.to_delete))
        deleted_here = [key for key in records if key in pending and key not in local]
        tombstones = self.storage.get_tombstones(label, deleted_here) if deleted_here else {}
        for key in deleted_here:
            self._modify_vs_local_delete(label, key, records[key], tombstones.get(key, 0), result)

    def _remove_orphans(self, label: str, deletes: Mapping[str, int], result: DatabaseResult) -> None:
        """Before the answer's ``deletes`` of ``label`` apply: rows with a change the server has not
        taken (a task created in a list that was deleted, or left the user's view, before the task
        reached the server) that refer to those rows go with them, and so, in turn, do the rows
        referring to the rows that go. Left in place they would dangle, and every sync would fail.

        This is sync's own delete: nothing is pushed for them. Each is reported in ``errors`` and
        logged with all its values (the app may restore it, under another parent)."""
        doomed = self._orphans(label, deletes)
        if not doomed:
            return

        def stamp(orphan: ReferenceViolation) -> int:
            """The delete that takes ``orphan``: its parent's, sent or taken the same way."""
            if orphan.parent_label == label and orphan.parent_key in deletes:
                return deletes[orphan.parent_key]
            return stamp(doomed[str(orphan.parent_label)][orphan.parent_key])

        removed = {child: self.storage.get_records(child, orphans) for child, orphans in doomed.items()}
        # children first: a row deleted under its referrers would take them along as local deletes
        for child in [*reversed(self._order), *(doomed.keys() - set(self._order))]:
            if removed.get(child):
                self.storage.delete_many(child, {key: stamp(doomed[child][key]) for key in removed[child]}, guard=False)
        for child, records in removed.items():
            for key, record in records.items():
                orphan = doomed[child][key]
                direct = orphan.parent_label == label and orphan.parent_key in deletes
                why = ("which the server deleted (or which left your view) before this change reached it" if direct
                       else "removed from this device in this sync")
                result.errors.append(record_error(child, key, f"removed from this device: it refers to "
                                                  f"{orphan.parent_label} {orphan.parent_key!r}, {why}; "
                                                  "its values are in the conflict log"))
                clashes = [FieldConflict(name, value, None, record.timestamps.get(name, 0), stamp(orphan))
                           for name, value in sorted(record.data.items()) if name not in META_FIELDS]
                conflict = RecordConflict(key, child, ConflictType.DELETE_VS_MODIFY, clashes, record, None)
                result.conflict_log.append(ConflictEntry(conflict, ResolutionSource.REMOTE))
                result.add("conflicts", child, [key])
        log.warning("removed %d row(s) with a change the server had not taken, referring to rows its answer deleted",
                    sum(map(len, removed.values())))

    def _orphans(self, label: str, deletes: Mapping[str, int]) -> dict[str, dict[str, ReferenceViolation]]:
        """The rows :meth:`_remove_orphans` removes before ``deletes`` of ``label`` apply: label -> key -> the
        reference that takes it (the pending rows referring to the deleted ones, then every row referring
        to a row taken, in turn)."""
        storage = self.storage
        if not deletes or not isinstance(storage, FindsReferrers):
            return {}
        doomed: dict[str, dict[str, ReferenceViolation]] = {}
        found = [orphan for orphan in storage.referrers(label, deletes, pending=True)
                 if not (orphan.label == label and orphan.key in deletes)]
        while found:
            fresh: dict[str, list[str]] = {}
            for orphan in found:
                if orphan.key not in doomed.setdefault(orphan.label, {}):
                    doomed[orphan.label][orphan.key] = orphan
                    fresh.setdefault(orphan.label, []).append(orphan.key)
            found = [orphan for child, keys in fresh.items() for orphan in storage.referrers(child, keys, pending=False)]
        return doomed

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
            result.errors.append(record_error(label, key, f"resolver failed: {type(exc).__name__}: {exc}"))
            return
        if resolution.delete or resolution.record is None:
            result.add("skipped", label, [key])
        else:
            self.storage.upsert_many(label, {key: resolution.record}, guard=False)
            result.add("applied", label, [key])
        result.add("conflicts", label, [key])
        result.conflict_log.append(ConflictEntry(conflict, resolution.source))


class _Orphans(Exception):
    """Internal: held-back records tried again would refer to rows that are gone."""

    def __init__(self, violations: list[ReferenceViolation]) -> None:
        super().__init__(f"{len(violations)} held-back record(s) refer to missing rows")
        self.violations = violations


def _deletes(response: SyncManifest, label: str) -> dict[str, int]:
    payload = response.payload(label)
    return payload.deletes if payload is not None else {}

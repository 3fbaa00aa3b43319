"""The server side of the engine: ``process`` answers one client round (PROTOCOL.md 7).

The server answers a complete round (nothing left to send) with its own clock
as the checkpoint, which is safe because ``process`` runs in one serialized
write transaction; this spares the echo round and lets even the existing
client finish after a delete (PROTOCOL.md 14). While paging, the checkpoint
stays put and per-model cursors carry the position, so every row and
tombstone is delivered exactly once.

Which write wins is decided by the writes' own stamps: a row's field stamps
and a delete's own HLC, never when they reached us (``received_at`` and a
tombstone's delivery stamp order delivery only). A tombstone keeps the row it
erased, so a later edit brings the row back with every field's newest value
whichever reached us first (``join_fields``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..conflict.reconciler import join_fields
from ..errors import SyncAbortedError
from ..protocol.wire import META_FIELDS, AfterKeys, ModelPayload, SyncManifest, SyncRecord, record_error
from .base import EngineBase
from .budget import READ_CHUNK, Budget
from .protocols import ChecksScope, Cursor
from .results import DatabaseResult, SyncStage

HIDDEN = "outside your scope: not a row you may change"
LEFT_SCOPE = "outside your scope once written: a row may not be created in, or moved to, what you cannot see"


class Serving(EngineBase):
    """``process``: the server's half of ``DatabaseEngine``."""


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
        final: set[tuple[str, str]] = set()
        bytes_max: int | None = None
        while True:
            try:
                return self._process(incoming, refused, final, bytes_max)
            except _BrokenReferences as broken:
                if broken.keys.keys() <= refused.keys():
                    raise SyncAbortedError(f"foreign keys stay broken after refusing {len(refused)} change(s)") from None
                refused.update(broken.keys)
                final |= broken.final
            except _Oversized:
                bytes_max = self.options.batch_bytes

    def _process(
        self, incoming: SyncManifest, refused: dict[tuple[str, str], str], final: set[tuple[str, str]],
        bytes_max: int | None,
    ) -> tuple[SyncManifest, DatabaseResult]:
        result = DatabaseResult()
        for (label, key), message in refused.items():
            result.errors.append(record_error(label, key, message))
        for payload in incoming.payloads:
            if payload.model_label not in self.graph:
                for key in [*payload.records, *payload.deletes]:
                    result.errors.append(record_error(payload.model_label, key, f"unknown model label {payload.model_label!r}"))
        with self.transaction():
            if self.lock is not None:
                self.lock.hold(self.node_id)
            self.check_stamps(incoming)
            self._accept(incoming)
            self._report(SyncStage.VALIDATE, 1, 1)
            # A round that brings nothing stores nothing: it needs no new stamp, and taking one would
            # write to the database on every idle poll.
            now = self.clock.now() if incoming.change_count else self.clock.last
            serving = _Round(incoming, now, Budget(self.options.batch_size, bytes_max), result, refused, final)
            served = [self._serve_records(label, serving) for label in self._order]
            has_more = any(model.cut for model in served)
            payloads: list[ModelPayload] = []
            after_keys: AfterKeys = {}
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
                self._check_scope(served)
            response = self._manifest(checkpoint, payloads, after_keys, has_more)
            if bytes_max is None and self.options.batch_bytes is not None and response.covered_size > self.options.batch_bytes:
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

    def _serve_records(self, label: str, serving: _Round) -> _ServedModel:
        incoming, budget = serving.incoming, serving.budget
        raw_cursor = incoming.after_keys.get(label)
        cursor = Cursor.from_wire(raw_cursor) if raw_cursor else None
        model = _ServedModel(label, cursor)
        payload = incoming.payload(label)
        if payload is not None:
            model.sent_keys = set(payload.records) | set(payload.deletes)
            self._apply_incoming(payload, model, serving)
        # Every row stored in this round has last_modified ``now`` (our clock moved past the
        # client's stamps first), and no other row has: those rows are the client's own, never sent
        # back, so they are not read; once the rows before them are served, the cursor skips them.
        until = serving.now - 1 if model.sent_keys else None
        position = cursor
        while not budget.exhausted:
            remaining = budget.remaining_records()
            limit = READ_CHUNK if remaining is None else min(remaining + 1, READ_CHUNK)
            rows = self.storage.get_changed_since(label, incoming.checkpoint, after=position, limit=limit, until=until)
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
                if until is not None:
                    model.position = Cursor(serving.now, max(model.sent_keys))
                return model
        # Is anything left to send? Not the rows the client sent: one more row than those is enough to tell.
        left = self.storage.get_changed_since(label, incoming.checkpoint, after=position, limit=len(model.sent_keys) + 1)
        model.cut = any(key not in model.sent_keys for key, _record in left)
        return model

    def _apply_incoming(self, payload: ModelPayload, model: _ServedModel, serving: _Round) -> None:
        """Reconcile a payload the client sent against our rows and store the outcome (PROTOCOL.md 7.3, 8)."""
        label, checkpoint, now, result = payload.model_label, serving.incoming.checkpoint, serving.now, serving.result
        payload = self._in_our_names(payload)
        problems = self._invalid_records(payload)
        departed: dict[str, int] = {}
        if isinstance(self.storage, ChecksScope):
            hidden = self.storage.hidden(label, [*payload.records, *payload.deletes]) - problems.keys()
            problems.update(dict.fromkeys(hidden, HIDDEN))
            # a change to a row that left the user's view is refused, and the row's delete goes back with
            # the refusal: the device drops the row instead of keeping a change no sync will ever take
            departed = self.storage.departed(label, hidden) if hidden else {}
        # A change refused on an earlier try for good (landing outside the scope, referring to a deleted
        # row) goes back with the row as we hold it: the device takes it instead of keeping a change no sync
        # will take. A new row refused for landing outside the scope goes back deleted (the device could
        # not keep it anyway once its list, say, has left the user's view).
        bounced = [key for refused_label, key in serving.final
                   if refused_label == label and key in payload.records and key not in problems]
        held = self.storage.get_records(label, bounced) if bounced else {}
        departed.update((key, payload.records[key].last_modified) for key in bounced
                        if key not in held and serving.refused[(label, key)] == LEFT_SCOPE)
        for key, message in problems.items():
            result.errors.append(record_error(label, key, message))
        skip = problems.keys() | {key for refused_label, key in serving.refused if refused_label == label}
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
        created = outcome.created_keys
        revived, stale = self._over_tombstones(label, {k: r for k, r in outcome.to_upsert.items() if k in created})
        model.written = set(outcome.to_upsert) - set(stale)  # an edit older than the delete that erased its row is not
        self.storage.upsert_many(label, revived, received_at=now, guard=False)
        # Everything else was decided against the stored rows inside this same transaction: a row the
        # client saw at its checkpoint is superseded by its edit, a conflict by its resolution. Guarding
        # these against our received_at would drop edits whose stamps predate our storing the row.
        updates = {k: r for k, r in outcome.to_upsert.items() if k not in created}
        completed = {k: whole for k, r in updates.items() if (whole := _with_missing_fields(r, local[k])) is not None}
        self.storage.upsert_many(label, {**updates, **completed}, received_at=now, guard=False)
        self.storage.delete_many(label, outcome.to_delete, received_at=now, guard=False)
        self._renew_tombstones(label, clean.deletes, local, now)
        self._report(SyncStage.MUTATE, len(outcome.to_upsert) + len(outcome.to_delete), len(clean))
        result.merge_reconciliation(outcome)
        result.add("deleted", label, list(outcome.to_delete))
        result.add("skipped", label, stale)
        for kind in ("created", "applied"):
            getattr(result, kind)[label] = [k for k in getattr(result, kind).get(label, []) if k not in stale]
        answers = {**completed, **outcome.response_records, **held}
        answers.update((key, record) for key, record in revived.items() if not _same_record(record, outcome.to_upsert[key]))
        # A row we hold exactly as the client sent it (stored by a round whose answer the client lost) is not
        # sent back: the client has it, and a later page of this sync could serve it once more.
        answers = {key: record for key, record in answers.items()
                   if key not in clean.records or not _same_record(record, clean.records[key])}
        for key, record in answers.items():
            serving.budget.take_record(record)
            model.records[key] = record
        model.stale_deletes = {key: stamp for key, stamp in self.storage.get_tombstones(label, stale).items()
                               if key not in answers}
        model.stale_deletes.update(departed)

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
        final: set[tuple[str, str]] = set()
        for label, key, parent_label, parent_key in self._reference_violations(incoming.payloads):
            sent = incoming.payload(label)
            parent = incoming.payload(parent_label) if parent_label else None
            if sent is not None and key in sent.records:
                broken[(label, key)] = f"refers to {parent_label} {parent_key!r}, which does not exist (deleted?)"
                if parent_label and self.storage.get_tombstones(parent_label, [parent_key]):
                    final.add((label, key))  # deleted; a parent that has not arrived yet may still come
            elif parent is not None and parent_key in parent.deletes:
                broken[(parent.model_label, parent_key)] = f"cannot be deleted: {label} {key!r} still refers to it"
            else:
                raise SyncAbortedError(f"{label} {key!r} refers to a missing {parent_label} {parent_key!r}")
        if broken:
            raise _BrokenReferences(broken, final)

    def _check_scope(self, served: list[_ServedModel]) -> None:
        """Before the round commits: a row it wrote that the user's scope does not hold now (inserted
        outside it, or moved out of it) names the change to refuse."""
        if not isinstance(self.storage, ChecksScope):
            return
        outside = {(model.label, key): LEFT_SCOPE
                   for model in served if model.written for key in self.storage.outside_scope(model.label, model.written)}
        if outside:
            raise _BrokenReferences(outside, set(outside))

    def _renew_tombstones(self, label: str, deletes: dict[str, int], local: dict[str, SyncRecord], now: int) -> None:
        """A client deleted a row we hold no row for: its delete becomes our tombstone, or renews ours if
        it is newer (the row was re-created there in between), so that a write older than the delete
        arriving afterwards cannot bring the row back."""
        absent = [key for key in deletes if key not in local]
        if not absent:
            return
        ours = self.storage.get_tombstones(label, absent)
        newer = {key: deletes[key] for key in absent if ours.get(key, -1) < deletes[key]}
        self.storage.delete_many(label, newer, received_at=now, guard=False)

    def _tombstones_for(self, model: _ServedModel, incoming: SyncManifest, has_more: bool) -> dict[str, int]:
        """The tombstones this answer carries: those that beat a record the client sent, and, on the final
        page of a paged answer (or a single one), every tombstone since the client's checkpoint, which
        stays put while it pages: each is sent once.

        All models' tombstones come together, on the last page: a page that deleted a parent while the
        deletes of the rows referring to it waited for a later page would leave those rows dangling on
        the device, which then refuses the page (its model's rows paging ahead or behind the others').
        """
        if has_more:
            return dict(model.stale_deletes)
        window = {
            key: stamp
            for key, stamp in self.storage.get_deletes_since(model.label, incoming.checkpoint).items()
            if key not in model.sent_keys and key not in model.records
        }
        return {**window, **model.stale_deletes}


@dataclass
class _Round:
    """One answer being assembled: the request, our clock for it, the page budget, the result, and the
    changes refused for their FOREIGN KEYs or the scope on an earlier try (``final``: those no later
    request can make acceptable)."""

    incoming: SyncManifest
    now: int
    budget: Budget
    result: DatabaseResult
    refused: dict[tuple[str, str], str]
    final: set[tuple[str, str]]


class _BrokenReferences(Exception):
    """Internal: the round would commit dangling foreign keys (or rows outside the scope); roll back and
    refuse these changes, ``final`` those that no later request can make acceptable."""

    def __init__(self, keys: dict[tuple[str, str], str], final: set[tuple[str, str]]) -> None:
        super().__init__(f"{len(keys)} change(s) break foreign keys")
        self.keys = keys
        self.final = final


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
        self.written: set[str] = set()
        """Keys of the rows the client's payload wrote (not those refused)."""
        self.cut = False


def _with_missing_fields(record: SyncRecord, stored: SyncRecord) -> SyncRecord | None:
    """``record`` with the fields of the stored row it lacks, values and stamps, or None if it lacks none.

    A client whose table has no column for a field, and kept nothing of it (it deleted the row and
    made it again before syncing, say), sends the row without it: the field is not erased, and the
    whole row goes back to the client, so that both sides hold the same row."""
    missing = stored.data.keys() - record.data.keys() - META_FIELDS
    if not missing:
        return None
    stamps = {name: stored.timestamps[name] for name in missing if name in stored.timestamps}
    return SyncRecord(record.key, {**record.data, **{name: stored.data[name] for name in missing}},
                      {**record.timestamps, **stamps}, record.received_at)


def _same_record(a: SyncRecord, b: SyncRecord) -> bool:
    return a.data == b.data and a.timestamps == b.timestamps


def _own_stamps(record: SyncRecord) -> SyncRecord:
    """``record`` as its writes stamped it, without the server's receive time."""
    return SyncRecord(record.key, record.data, record.timestamps) if record.received_at else record

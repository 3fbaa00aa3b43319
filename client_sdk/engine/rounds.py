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

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack

from ..errors import PayloadLimitError, SyncAbortedError, TransportRequiredError
from ..protocol.gcpause import gc_paused
from ..protocol.wire import AfterKeys, ModelPayload, RecordError, SyncManifest, SyncRecord, record_error
from .apply import Applying, SyncRun
from .budget import READ_CHUNK, Budget, record_size
from .pipeline import Collected, InFlight, PullPipeline, settles
from .protocols import Cursor, HoldsBack, Transport
from .results import DatabaseResult, SyncPhase, SyncStage, SyncStatus

log = logging.getLogger("client_sdk.sync")

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


class Syncing(Applying):
    """``sync``: the client's half of ``DatabaseEngine``."""


    def sync(self, dry_run: bool = False) -> DatabaseResult:
        """Run rounds until the server's answer is complete and empty (PROTOCOL.md 11 waits for a quiet round
        instead; see :data:`FOLLOW_UP_ROUNDS` for the bound under load). ``dry_run`` pulls once and changes nothing."""
        transport = self.transport
        if transport is None:
            raise TransportRequiredError("this engine has no transport: pass transport= to sync as a client")
        result = DatabaseResult(dry_run=dry_run)
        what = "dry run" if dry_run else "sync"
        started = time.monotonic()
        status = SyncStatus.FAILED
        try:
            asked = None if dry_run else self._ask_first(transport)
            if asked is not None and _quiet(asked[2]):
                result.rounds, result.checkpoint = 1, asked[0]
            else:
                self._session = self.lock.acquire(self.node_id) if self.lock is not None else None
                if dry_run:
                    self._dry_run(result, transport)
                else:
                    self._rounds(result, transport, asked)
            self._phase(SyncPhase.COMPLETE)
            status = SyncStatus.SUCCEEDED
        except BaseException as exc:
            log.warning("%s of node %r failed after %.2f s in round %d: %s: %s", what, self.node_id,
                        time.monotonic() - started, result.rounds, type(exc).__name__, exc)
            self._phase(SyncPhase.FAILED)
            raise
        finally:
            if self.lock is not None and self._session is not None:
                self.lock.release(self._session, status, result)
            self._session = None
        log.info("%s of node %r done in %.2f s: %s", what, self.node_id, time.monotonic() - started,
                 ", ".join(f"{count} {kind}" for kind, count in result.summary().items()))
        if self.on_complete is not None:
            self._report(SyncStage.CALLBACK, 0, 1)
            self.on_complete(result)
            self._report(SyncStage.CALLBACK, 1, 1)
        return result

    def _ask_first(self, transport: Transport) -> tuple[int, SyncManifest, SyncManifest] | None:
        """With nothing to push, nothing held back and no paging under way, pull once before taking the
        lock, writing nothing: (checkpoint, request, answer), or None if there is something to push.

        An empty complete answer ends the sync there, so a no-op sync writes nothing on either side
        (its checkpoint is not stored, nor the clock moved: both only matter once something is
        applied). Any other answer becomes the sync's first round (see :meth:`_rounds`)."""
        storage = self.storage
        if storage.get_after_keys() or storage.has_pending_after(-1):
            return None
        if isinstance(storage, HoldsBack) and storage.held_back():
            return None
        checkpoint = storage.get_checkpoint()
        self._phase(SyncPhase.EXCHANGING)
        request = self._pull(checkpoint, {})
        response = transport.exchange(request)
        response.verify_checksum()
        self.check_drift(response)
        return checkpoint, request, response

    def _rounds(
        self, result: DatabaseResult, transport: Transport, asked: tuple[int, SyncManifest, SyncManifest] | None = None
    ) -> None:
        """The rounds of a sync, under the lock. ``asked``: a pull already answered (:meth:`_ask_first`),
        taken as the first round if the stored position is still the one it was asked from."""
        run = SyncRun(result, since=self.storage.get_checkpoint())
        if asked is not None and (run.since, self.storage.get_after_keys()) != (asked[0], {}):
            asked = None  # another sync moved on meanwhile
        self._retry_held(run.since, result)
        try:
            self._exchange_rounds(run, transport, asked)
        finally:
            if isinstance(self.storage, HoldsBack):
                result.held_back = self.storage.held_back()

    def _exchange_rounds(
        self, run: SyncRun, transport: Transport, asked: tuple[int, SyncManifest, SyncManifest] | None
    ) -> None:
        result = run.result
        unpushed = run.unpushed
        pipeline: PullPipeline | None = None
        ahead: Collected | None = None  # the next push page, collected while the one before was at the server
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
                    # The collector is held off for the round: an answer's objects, all alive until it is
                    # applied, are freed before it runs again (gcpause.py), instead of being walked over and over.
                    with gc_paused():
                        self._phase(SyncPhase.COLLECTING)
                        pulled = pipeline.next() if pipeline is not None else asked
                        asked = None
                        if pulled is not None:
                            self._phase(SyncPhase.EXCHANGING)
                            checkpoint, request, response = pulled
                        else:
                            if pipeline is not None:
                                pipeline.close()
                                pipeline = None
                            checkpoint, request, response, ahead = self._push_round(transport, run, ahead)
                        self._phase(SyncPhase.RECONCILING)
                        complete = not request.has_more and not response.has_more
                        # An empty complete answer leaves this sync nothing to do: what is pending now was
                        # written while the round was in flight, and waits for the next sync.
                        last = complete and response.change_count == 0
                        if opened is None:
                            held.enter_context(self.transaction())
                            opened = time.monotonic()
                        self._accept(response)
                        following = None if pipeline or last else self._pull_ahead(request, response, checkpoint, unpushed)
                        if following is not None:
                            pipeline = PullPipeline(transport, self._pull, *following)
                        self._apply_response(request, response, checkpoint, run)
                        result.checkpoint = max(response.checkpoint, checkpoint)
                        log.debug("round %d: sent %d change(s)%s, received %d%s; checkpoint %d", result.rounds,
                                  request.change_count, " (more to push)" if request.has_more else "",
                                  response.change_count, " (more to pull)" if response.has_more else "",
                                  result.checkpoint)
                        if pipeline is not None and settles(response):
                            pipeline.close()
                            pipeline = None
                        remaining = COMMIT_INTERVAL - (time.monotonic() - opened)
                        if not (pipeline is not None and remaining > 0 and pipeline.ready(remaining)):
                            held.close()
                            opened = None
                        pulled_ahead = pulled is not None
                        del pulled, request, response
                    # A request sent ahead could not see what applying the rounds before it changed
                    # locally (an ON DELETE CASCADE, say): the sync ends only once that is pushed too.
                    if last and not (pulled_ahead and self._collect(result.checkpoint, {}, unpushed).payloads):
                        return
                    if complete and not last:
                        follow_ups += 1
                        if follow_ups > FOLLOW_UP_ROUNDS:
                            return
        finally:
            if pipeline is not None:
                pipeline.close()

    def _push_round(
        self, transport: Transport, run: SyncRun, ahead: Collected | None
    ) -> tuple[int, SyncManifest, SyncManifest, Collected | None]:
        """A round that pushes what is pending (or pulls, if nothing is): its checkpoint, request and
        answer, and the next push page if it was collected meanwhile (``ahead`` is this round's).

        While a request that leaves more to push is at the server, the next page is collected
        (pipelined pushes). It is sent only once this answer has been applied, with the checkpoint it
        brings: a push changes the server, and the rows it stored would otherwise come back. An
        answer that changes anything here (rows, deletes, refusals) drops that page, and the next
        round collects afresh, as without pipelining; an empty one leaves it as a collection after
        acknowledging this request would have found it, but for writes made in between, which a
        round in flight leaves pending in any case.
        """
        checkpoint, after_keys = self.storage.get_checkpoint(), self.storage.get_after_keys()
        collected = ahead if ahead is not None else self._pending(run.unpushed, run.result.errors)
        request = self._manifest(checkpoint, collected.payloads, after_keys, collected.has_more)
        self._check_limits(request)
        self._phase(SyncPhase.EXCHANGING)
        if not request.has_more:
            return checkpoint, request, transport.exchange(request), None
        in_flight = InFlight(transport, request)
        try:
            following = self._pending(run.unpushed, run.result.errors, (request, collected))
            for payload in following.payloads:
                payload.encode_ahead()
        except BaseException:
            in_flight.wait()
            raise
        response = in_flight.result()
        return checkpoint, request, response, None if response.change_count or response.errors else following

    def _pull_ahead(
        self, request: SyncManifest, response: SyncManifest, checkpoint: int, unpushed: dict[str, set[str]]
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
        pull = self._collect(following, response.after_keys, unpushed)
        if pull.payloads or pull.has_more:
            return None
        return following, pull

    def _pull(self, checkpoint: int, after_keys: AfterKeys) -> SyncManifest:
        """A request that pushes nothing (see :class:`PullPipeline`)."""
        return self._manifest(checkpoint, [], after_keys, False)

    def _collect(
        self, checkpoint: int, after_keys: AfterKeys, unpushed: dict[str, set[str]],
        errors: list[RecordError] | None = None,
    ) -> SyncManifest:
        """Pending local changes, in dependency order, within the budget (see :meth:`_pending`)."""
        collected = self._pending(unpushed, errors)
        request = self._manifest(checkpoint, collected.payloads, after_keys, collected.has_more)
        self._check_limits(request)
        return request

    def _pending(
        self, unpushed: dict[str, set[str]], errors: list[RecordError] | None,
        following: tuple[SyncManifest, Collected] | None = None,
    ) -> Collected:
        """Pending local changes, in dependency order, within the budget.

        A row no node could store as it is (a non-finite number, text that is not valid UTF-8,
        a value its column's type does not allow) is quarantined: left out, reported in
        ``errors`` once per sync, and still pending, so it goes as soon as the app fixes it.

        The pending rows and tombstones are read in one transaction: another writer that deletes a
        key and creates it again meanwhile can never make it both a row and a tombstone in the
        request (which a server refuses whole).

        ``following``: a request still at the server and what it was collected from; the page after
        it is collected, as if that request had been acknowledged. Its rows are before where its
        collection ended, and a row written since has a newer stamp, so it comes after that (see
        :meth:`_push_round`); its tombstones are left out unless written again since.
        """
        budget = Budget(self.options.batch_size, self.options.batch_bytes)
        collected = Collected([], False)
        with self.transaction():
            for label in self._order:
                skip = unpushed.setdefault(label, set())
                after: Cursor | None = None
                sent: dict[str, int] = {}
                if following is not None:
                    in_flight = following[0].payload(label)
                    after, sent = following[1].ends.get(label), in_flight.deletes if in_flight is not None else {}
                payload, left_out, end = self._pending_payload(
                    label, budget, skip, errors, rows=not collected.has_more, after=after, sent=sent)
                collected.has_more = collected.has_more or left_out
                if payload is not None:
                    collected.payloads.append(payload)
                if end is not None:
                    collected.ends[label] = end
        return collected

    def _pending_payload(
        self, label: str, budget: Budget, skip: set[str], errors: list[RecordError] | None, *, rows: bool,
        after: Cursor | None = None, sent: dict[str, int] | None = None,
    ) -> tuple[ModelPayload | None, bool, Cursor | None]:
        """One model's pending tombstones (but those in ``sent`` with the same stamp) and (if ``rows``)
        rows after ``after``, oldest first, while ``budget`` has room: the payload (None if empty),
        whether anything was left out, and the last row read that was not left out. Rows no node
        could store join ``skip``."""
        deletes: dict[str, int] = {}
        records: dict[str, SyncRecord] = {}
        left_out = False
        for key, stamp in sorted(self.storage.get_pending_deletes(label).items(), key=lambda item: (item[1], item[0])):
            if key in skip or (sent is not None and sent.get(key) == stamp):
                continue
            if not budget.take(len(key) + 24):
                left_out = True
                break
            deletes[key] = stamp
        position = after
        while rows and not left_out:
            room = budget.remaining_records()
            limit = READ_CHUNK if room is None else min(READ_CHUNK, room + 1)  # one more tells whether any is left
            page = self.storage.get_pending(label, after=position, limit=limit)
            for key, message in self._invalid_records(ModelPayload(label, dict(page))).items():
                if key not in skip and errors is not None:
                    errors.append(record_error(label, key, f"not pushed: {message}"))
                    log.warning("quarantined %s row %r, not pushed until the app fixes it: %s", label, key, message)
                skip.add(key)
            fresh = [(key, record) for key, record in page if key not in skip]
            if budget.take_all(record for _key, record in fresh):  # one measure for the page, as a rule
                records.update((key, SyncRecord(key, record.user_data(), record.timestamps)) for key, record in fresh)
                if page:
                    position = Cursor(page[-1][1].last_modified, page[-1][0])
            else:
                for key, record in page:
                    if key not in skip:
                        if not budget.take_record(record):
                            left_out = True
                            break
                        records[key] = SyncRecord(key, record.user_data(), record.timestamps)
                    position = Cursor(record.last_modified, key)
            if len(page) < limit:
                break
        return (ModelPayload(label, records, deletes) if records or deletes else None), left_out, position

    def unpushable(self) -> list[RecordError]:
        """The pending rows a sync leaves out because no node could store them as they are
        (see :meth:`_collect`): ``{"key", "model_label", "message"}`` each, in sync order."""
        found = []
        for label in self._order:
            position: Cursor | None = None
            while True:
                rows = self.storage.get_pending(label, after=position, limit=READ_CHUNK)
                found += [record_error(label, key, message)
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


def _has_pending(pending: set[str]) -> Callable[[str, SyncRecord], bool]:
    """``unsynced`` for :meth:`PayloadReconciler.reconcile`: whether the key has a pending local change."""
    return lambda key, _record: key in pending


def _quiet(response: SyncManifest) -> bool:
    """An answer that leaves nothing to do: complete, no changes, no errors."""
    return not response.has_more and not response.change_count and not response.errors

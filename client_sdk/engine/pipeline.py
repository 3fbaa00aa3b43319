"""Pulling pages back to back while the client applies the ones already received, and collecting the
next push page while the server applies the one before."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, cast

from ..protocol.sealed import preview_sealed
from ..protocol.wire import AfterKeys, ModelPayload, SyncManifest
from .protocols import ByteTransport, Cursor, Transport

Round = tuple[int, SyncManifest, SyncManifest]
"""(checkpoint the request was made from, request, response)."""
_Answer = tuple[int, SyncManifest, SyncManifest | bytes] | BaseException | None


class _Nothing(Enum):
    """No answer taken ahead (``None`` is an answer: the end)."""

    NOTHING = 0


_NOTHING = _Nothing.NOTHING


def settles(response: SyncManifest) -> bool:
    """A pull answered with nothing and nothing more to come: the sync has caught up."""
    return response.change_count == 0 and not response.has_more


class PullPipeline:
    """Sends pull requests from a worker thread, each as soon as the answer before it arrived.

    A pull changes nothing on the server, and its request follows from the
    previous answer alone (the checkpoint carried forward and the answer's
    cursors; ``pull`` builds it), so the server prepares page n+1 while the
    client applies page n. A :class:`ByteTransport` answer is only previewed
    here (:func:`preview_sealed`) and decoded by :meth:`next`, on the sync's
    own thread, so the worker mostly waits on the network. At most two answers
    wait in the pipeline, so memory stays bounded by a few pages. It stops
    after an answer that :func:`settles`; a failed exchange ends it too, and
    :meth:`next` raises that failure in order.
    """

    def __init__(
        self, transport: Transport, pull: Callable[[int, AfterKeys], SyncManifest], checkpoint: int,
        request: SyncManifest,
    ) -> None:
        self._transport = transport
        self._pull = pull
        self._answers: queue.Queue[_Answer] = queue.Queue(1)
        self._early: _Answer | Literal[_Nothing.NOTHING] = _NOTHING
        """An answer :meth:`ready` took from the queue ahead of :meth:`next`."""
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._run, args=(checkpoint, request), name="sync-pull", daemon=True)
        self._worker.start()

    def next(self) -> Round | None:
        """The next round, in order; None once the pipeline has ended (after an answer that settled,
        as far as the worker could tell). Raises what ended the pipeline if that comes first."""
        answer = self._answers.get() if self._early is _NOTHING else self._early
        self._early = _NOTHING
        if answer is None:
            return None
        if isinstance(answer, BaseException):
            raise answer
        checkpoint, request, response = answer
        if isinstance(response, bytes):
            response = cast(ByteTransport, self._transport).decode(response)  # only a ByteTransport's answers are bytes
        return checkpoint, request, response

    def ready(self, timeout: float) -> bool:
        """Whether :meth:`next` will hand over a round (not the end, not a failure) without waiting,
        once it had up to ``timeout`` seconds to arrive. (The answer leaves the queue, so the worker
        may fetch one more.)"""
        if self._early is _NOTHING:
            try:
                self._early = self._answers.get(timeout=timeout)
            except queue.Empty:
                return False
        return isinstance(self._early, tuple)

    def close(self) -> None:
        """Stop sending; wait for an exchange in flight (its answer is dropped)."""
        self._stopping.set()
        self._worker.join()

    def _run(self, checkpoint: int, request: SyncManifest) -> None:
        try:
            while not self._stopping.is_set():
                answer, following, after_keys, done = self._exchange(checkpoint, request)
                self._hand_over((checkpoint, request, answer))
                if done:
                    self._hand_over(None)
                    return
                checkpoint, request = following, self._pull(following, after_keys)
        except BaseException as exc:  # handed to the sync's own thread, which raises it
            self._hand_over(exc)

    def _exchange(self, checkpoint: int, request: SyncManifest) -> tuple[SyncManifest | bytes, int, AfterKeys, bool]:
        """One answer (undecoded if the transport allows and its preview reads) and what follows it:
        the next checkpoint, the cursors, and whether the answer settles the sync."""
        if isinstance(self._transport, ByteTransport):
            body = self._transport.send(request)
            preview = preview_sealed(body)
            if preview is not None:
                return body, max(preview.checkpoint, checkpoint), preview.after_keys, preview.settles
            response = self._transport.decode(body)
        else:
            response = self._transport.exchange(request)
        return response, max(response.checkpoint, checkpoint), response.after_keys, settles(response)

    def _hand_over(self, answer: _Answer) -> None:
        while not self._stopping.is_set():
            try:
                self._answers.put(answer, timeout=0.05)
                return
            except queue.Full:
                continue


@dataclass
class Collected:
    """The pending changes one push request carries, before they are made its manifest."""

    payloads: list[ModelPayload]
    has_more: bool
    ends: dict[str, Cursor] = field(default_factory=dict)
    """Label -> the last pending row read (taken or left out as unpushable): the next page starts after it."""


class InFlight:
    """One exchange on a worker thread, so that the sync's own thread can collect the next push page
    while the server applies this one. Pushes change the server, so only one is ever in flight: the
    next request is sent after this answer was applied (it carries the checkpoint that answer brings)."""

    def __init__(self, transport: Transport, request: SyncManifest) -> None:
        self._answer: SyncManifest | BaseException | None = None
        self._worker = threading.Thread(target=self._run, args=(transport, request), name="sync-push", daemon=True)
        self._worker.start()

    def _run(self, transport: Transport, request: SyncManifest) -> None:
        try:
            self._answer = transport.exchange(request)
        except BaseException as exc:  # handed to the sync's own thread, which raises it
            self._answer = exc

    def wait(self) -> None:
        self._worker.join()

    def result(self) -> SyncManifest:
        """The answer, once it arrived; raises what the exchange raised."""
        self._worker.join()
        assert self._answer is not None
        if isinstance(self._answer, BaseException):
            raise self._answer
        return self._answer

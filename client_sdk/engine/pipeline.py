"""Pulling pages back to back while the client applies the ones already received."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from ..protocol.wire import SyncManifest
from .protocols import Transport

Round = tuple[int, SyncManifest, SyncManifest]
"""(checkpoint the request was made from, request, response)."""


def settles(response: SyncManifest) -> bool:
    """A pull answered with nothing and nothing more to come: the sync has caught up."""
    return response.change_count == 0 and not response.has_more


class PullPipeline:
    """Sends pull requests from a worker thread, each as soon as the answer before it arrived.

    A pull changes nothing on the server, and its request follows from the
    previous answer alone (``follow``: the checkpoint carried forward and the
    answer's cursors), so the server prepares page n+1 while the client applies
    page n. At most one answer waits in the pipeline, so memory stays bounded
    by a page or two. It stops after an answer that :func:`settles`; a failed
    exchange ends it too, and :meth:`next` raises that failure in order.
    """

    def __init__(
        self,
        transport: Transport,
        follow: Callable[[int, SyncManifest], tuple[int, SyncManifest]],
        checkpoint: int,
        request: SyncManifest,
    ) -> None:
        self._transport = transport
        self._follow = follow
        self._answers: queue.Queue[Round | BaseException] = queue.Queue(maxsize=1)
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._run, args=(checkpoint, request), name="sync-pull", daemon=True)
        self._worker.start()

    def next(self) -> Round:
        """The next round, in order; raises what ended the pipeline if that comes first."""
        answer = self._answers.get()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def close(self) -> None:
        """Stop sending; wait for an exchange in flight (its answer is dropped)."""
        self._stopping.set()
        self._worker.join()

    def _run(self, checkpoint: int, request: SyncManifest) -> None:
        try:
            while not self._stopping.is_set():
                response = self._transport.exchange(request)
                self._hand_over((checkpoint, request, response))
                if settles(response):
                    return
                checkpoint, request = self._follow(checkpoint, response)
        except BaseException as exc:  # handed to the sync's own thread, which raises it
            self._hand_over(exc)

    def _hand_over(self, answer: Round | BaseException) -> None:
        while not self._stopping.is_set():
            try:
                self._answers.put(answer, timeout=0.05)
                return
            except queue.Full:
                continue

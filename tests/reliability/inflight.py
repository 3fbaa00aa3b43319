"""A transport that lets a test write while a round is in flight."""

from __future__ import annotations

from collections.abc import Callable

from client_sdk import SyncManifest, Transport

POINTS = ("before_send", "after_answer")
"""Right after the round's request was collected, and right after the server committed and answered
(before the answer is applied)."""


class HookedTransport:
    """Wraps a transport; the next exchange calls ``hook`` at ``point`` once. It offers ``exchange``
    alone, so rounds are never pipelined and every exchange runs on the sync's own thread."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self._hooks: dict[str, Callable[[], None]] = {}

    def at_next_exchange(self, point: str, hook: Callable[[], None]) -> None:
        assert point in POINTS, point
        self._hooks[point] = hook

    def exchange(self, manifest: SyncManifest) -> SyncManifest:
        self._fire("before_send")
        response = self.inner.exchange(manifest)
        self._fire("after_answer")
        return response

    def clear(self) -> None:
        self._hooks.clear()

    def _fire(self, point: str) -> None:
        hook = self._hooks.pop(point, None)
        if hook is not None:
            hook()

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()

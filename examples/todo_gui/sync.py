"""Sync plumbing for the window: the SDK syncs on its auto-sync thread; what it reports crosses to the Tk
thread through a queue the window drains with ``after()``. Nothing here touches Tk.

The callbacks (``on_change``, ``on_status``, ``on_error``) run on the sync thread: each only puts an
event in the queue. The window polls ``drain()`` every few milliseconds from Tk's own loop, so Tk is
only ever called from the thread that created it, and the loop never waits for a sync.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from client_sdk import AutoSync, ClientStatus, SyncChanges, SyncClient


@dataclass(frozen=True)
class Timing:
    """How eagerly to sync: ``interval`` s between pulls when idle, ``poll`` s between looks for local
    changes (and for the server while offline, backing off up to ``max_backoff`` s)."""

    interval: float = 10.0
    poll: float = 0.5
    max_backoff: float = 5.0


Event = tuple[str, Any]
"""``("status", ClientStatus)``, ``("changes", SyncChanges)`` or ``("error", BaseException)``."""


class SyncBridge:
    def __init__(self, client: SyncClient, timing: Timing = Timing()) -> None:
        self.client = client
        self.timing = timing
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.auto: AutoSync | None = None
        self._unsubscribe: list[Callable[[], None]] = [
            client.on_change(lambda changes: self.events.put(("changes", changes))),
            client.on_status(lambda status: self.events.put(("status", status))),
        ]

    @property
    def has_server(self) -> bool:
        return self.client.transport is not None

    def start(self) -> None:
        """Sync in the background from now on (when there is a server): at once, on every local change,
        every ``interval`` s, and as soon as the server answers again after being away."""
        if self.has_server and self.auto is None:
            self.auto = self.client.start_auto_sync(
                self.timing.interval, poll=self.timing.poll, max_backoff=self.timing.max_backoff,
                on_error=lambda exc: self.events.put(("error", exc)),
            )

    def sync_now(self) -> None:
        """A local edit or the Sync button: sync soon, on the background thread."""
        if self.auto is not None:
            self.auto.trigger()

    def drain(self) -> list[Event]:
        """Everything reported since the last call, oldest first (the Tk thread calls this)."""
        drained: list[Event] = []
        while True:
            try:
                drained.append(self.events.get_nowait())
            except queue.Empty:
                return drained

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        self.client.stop_auto_sync()
        self.auto = None


__all__ = ["ClientStatus", "Event", "SyncBridge", "SyncChanges", "Timing"]

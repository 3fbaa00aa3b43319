"""What an app's window listens to: the rows a sync changed, and the client's sync status.

Callbacks run on the thread that caused the event (the one that ran the sync, or the auto-sync
thread). A GUI hands them to its own thread: Tkinter with ``root.after(0, ...)`` from a queue it
drains, Qt with a signal, asyncio with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .sqlite.journal import LastSync

log = logging.getLogger("client_sdk.sync")

T = TypeVar("T")


@dataclass(frozen=True)
class SyncChanges:
    """The rows of the app's tables a sync inserted, updated and deleted: table -> keys, each sorted."""

    inserted: dict[str, list[str]] = field(default_factory=dict)
    updated: dict[str, list[str]] = field(default_factory=dict)
    deleted: dict[str, list[str]] = field(default_factory=dict)

    @property
    def tables(self) -> set[str]:
        return {*self.inserted, *self.updated, *self.deleted}

    def __bool__(self) -> bool:
        return bool(self.tables)


@dataclass(frozen=True)
class ClientStatus:
    """A client's sync status, for a status bar.

    ``online``: whether the server answered the last attempt to reach it (None before any).
    ``syncing``: a sync is running. ``pending``: local changes the server has not acknowledged.
    ``last_sync``: when the last sync finished and how. ``quarantined``: pending rows no sync
    pushes until the app fixes them; ``held_back``: received rows this database cannot store yet.
    """

    online: bool | None
    syncing: bool
    pending: int
    last_sync: LastSync | None
    quarantined: int
    held_back: int


class Listeners(Generic[T]):
    """Callbacks of one kind: ``add`` returns the function that removes the callback again."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[T], None]] = []
        self._lock = threading.Lock()

    def add(self, callback: Callable[[T], None]) -> Callable[[], None]:
        if not callable(callback):
            raise TypeError("callback must be callable")
        with self._lock:
            self._callbacks.append(callback)

        def remove() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return remove

    def __bool__(self) -> bool:
        return bool(self._callbacks)

    def notify(self, event: T) -> None:
        """Call each callback; one that raises is logged and does not keep the others from hearing."""
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(event)
            except Exception:
                log.exception("a listener (%r) raised", callback)


class SyncEvents:
    """A client's listeners and what its status bar shows that the file does not keep: shared by a
    client and its auto-sync worker, so either one's syncs reach the app's callbacks."""

    def __init__(self) -> None:
        self.changes: Listeners[SyncChanges] = Listeners()
        self.statuses: Listeners[ClientStatus] = Listeners()
        self.online: bool | None = None
        self.syncing = False

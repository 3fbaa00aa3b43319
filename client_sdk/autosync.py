"""Sync on reconnect: a background thread that syncs when the server is reachable and there is work."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from .engine.results import DatabaseResult
from .errors import InvalidParameterError

log = logging.getLogger("client_sdk.autosync")

MAX_DOUBLINGS = 32
"""The backoff stops doubling here (it is capped by ``max_backoff`` long before)."""


class _Syncable(Protocol):
    def sync(self, dry_run: bool = False) -> DatabaseResult: ...

    def clock_stamp(self) -> int: ...

    def has_pending_after(self, stamp: int) -> bool: ...

    def reachable(self) -> bool: ...


class AutoSync:
    """Runs ``client.sync()`` in a daemon thread.

    Every ``poll`` seconds it looks for new local changes and syncs at once
    when there are some; otherwise it syncs every ``interval`` seconds to
    pull. Before a sync it checks that the server answers. While the server
    is unreachable or syncs fail, it retries with an exponential backoff
    (``poll``, doubling up to ``max_backoff``) and syncs as soon as a check
    succeeds again. An unreachable server is the normal offline state and is
    not reported; every sync's result goes to ``on_result`` and every sync
    error to ``on_error``, both called on this thread. The client's sync lock
    keeps two syncs from ever overlapping.
    """

    def __init__(
        self,
        client: _Syncable,
        *,
        interval: float = 30.0,
        poll: float = 1.0,
        max_backoff: float = 300.0,
        on_result: Callable[[DatabaseResult], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        for name, value in (("interval", interval), ("poll", poll), ("max_backoff", max_backoff)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise InvalidParameterError(f"{name} must be a positive number of seconds")
        for name, callback in (("on_result", on_result), ("on_error", on_error)):
            if callback is not None and not callable(callback):
                raise InvalidParameterError(f"{name} must be callable")
        self.client = client
        self.interval = float(interval)
        self.poll = min(float(poll), self.interval)
        self.max_backoff = max(float(max_backoff), self.poll)
        self.on_result = on_result
        self.on_error = on_error
        self.failures = 0
        """Consecutive failed attempts (unreachable or failed syncs); 0 after a sync succeeds."""
        self._synced_up_to: int | None = None
        """The clock when the last successful sync started: later pending changes are new work."""
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="client-sdk-autosync", daemon=True)

    def start(self) -> AutoSync:
        self._thread.start()
        return self

    def trigger(self) -> None:
        """Sync as soon as possible (e.g. the app knows the network just came back)."""
        self._wake.set()

    def stop(self, timeout: float | None = 30.0) -> None:
        """End the loop and wait for the thread; a sync in progress finishes first."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the background thread is alive."""
        return self._thread.is_alive()

    def next_delay(self) -> float:
        """Seconds until the next look: ``poll``, or the backoff after failures."""
        if not self.failures:
            return self.poll
        backoff: float = self.poll * 2 ** min(self.failures, MAX_DOUBLINGS)
        return min(backoff, self.max_backoff)

    def _run(self) -> None:
        last_attempt: float | None = None
        while not self._stop.is_set():
            woken = self._wake.is_set()
            self._wake.clear()
            idle = last_attempt is None or time.monotonic() - last_attempt >= self.interval
            if woken or idle or self.failures or self._has_local_changes():
                last_attempt = time.monotonic()
                self._attempt()
            self._wake.wait(self.next_delay())

    def _has_local_changes(self) -> bool:
        """Local writes made since the last successful sync started, still pending (changes the server
        refused stay pending but do not retrigger a sync on their own)."""
        if self._synced_up_to is None:
            return False
        try:
            return self.client.has_pending_after(self._synced_up_to)
        except Exception:  # a busy database: look again at the next tick
            return False

    def _attempt(self) -> None:
        if self._stop.is_set():
            return
        try:
            if not self.client.reachable():
                self.failures += 1
                return
            started_at = self.client.clock_stamp()
            result = self.client.sync()
        except Exception as exc:  # reported through on_error; the loop must survive any failure
            self.failures += 1
            self._report(self.on_error, exc)
            return
        self.failures = 0
        self._synced_up_to = started_at
        self._report(self.on_result, result)

    def _report(self, callback: Callable[..., None] | None, value: object) -> None:
        """Hand ``value`` to an app callback; a callback that raises must not end the loop."""
        if callback is None:
            return
        try:
            callback(value)
        except Exception:  # the app's own bug: log it, keep syncing
            log.exception("auto sync callback %r raised", callback)

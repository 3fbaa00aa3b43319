"""Sync on reconnect: a background thread that syncs when the server is reachable and there is work."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from .engine.results import DatabaseResult
from .errors import InvalidParameterError


class _Syncable(Protocol):
    def sync(self, dry_run: bool = False) -> DatabaseResult: ...

    def pending_count(self) -> int: ...

    def reachable(self) -> bool: ...


class AutoSync:
    """Runs ``client.sync()`` in a daemon thread.

    Every ``poll`` seconds it looks for local changes and syncs at once when
    there are some; otherwise it syncs every ``interval`` seconds to pull.
    When the server is unreachable or a sync fails it backs off
    exponentially up to ``max_backoff``, and syncs as soon as a reachability
    check succeeds again. Results and errors go to the callbacks; the client's
    own lock keeps two syncs from ever overlapping.
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
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise InvalidParameterError(f"{name} must be a positive number of seconds")
        self.client = client
        self.interval = float(interval)
        self.poll = min(float(poll), self.interval)
        self.max_backoff = float(max_backoff)
        self.on_result = on_result
        self.on_error = on_error
        self.failures = 0
        self._pending_seen = 0
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
        """Stop the loop; a sync in progress finishes first."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def _run(self) -> None:
        since_sync = self.interval  # sync once right away
        while not self._stop.is_set():
            due = since_sync >= self.interval or self._wake.is_set() or self._has_local_changes()
            self._wake.clear()
            if due:
                since_sync = 0.0
                self._attempt()
            wait = self._backoff() if self.failures else self.poll
            self._wake.wait(wait)
            since_sync += wait

    def _has_local_changes(self) -> bool:
        """New local changes since the last sync (changes a server refused do not retrigger it)."""
        pending = self._count_pending()
        return pending > 0 and pending != self._pending_seen

    def _count_pending(self) -> int:
        try:
            return self.client.pending_count()
        except Exception:  # a closed or busy database: try again at the next tick
            return 0

    def _backoff(self) -> float:
        return min(self.poll * 2 ** self.failures, self.max_backoff)

    def _attempt(self) -> None:
        try:
            if not self.client.reachable():
                self.failures += 1
                return
            result = self.client.sync()
        except Exception as exc:  # reported through on_error; the loop must survive any failure
            self.failures += 1
            if self.on_error is not None:
                self.on_error(exc)
            return
        self.failures = 0
        self._pending_seen = self._count_pending()
        if self.on_result is not None:
            self.on_result(result)

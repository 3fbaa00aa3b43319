"""The sync lock: one row in the database, so every process and connection sees it."""

from __future__ import annotations

import os
import socket
import sqlite3
import time
import uuid
from pathlib import Path

from ..engine.results import DatabaseResult, SyncPhase, SyncStatus
from ..errors import InvalidParameterError, LockContentionError
from .ddl import LOCK
from .transaction import Transactions

DEFAULT_STALE_AFTER = 600.0
"""Seconds without a phase update after which a lock is presumed abandoned."""


def _start_time(pid: int) -> str | None:
    """The process's start time (Linux), to tell a live holder from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    if os.name == "nt":
        return True  # no cheap, safe probe: rely on the staleness timeout
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    current = _start_time(pid)
    return started is None or current is None or current == started


class SqliteSyncLock:
    """A :class:`~client_sdk.engine.protocols.SyncLock` for one database file.

    ``acquire(node_id)`` starts a sync session and returns its id (the token of
    the one lock row), or raises :class:`LockContentionError` at once when
    another holder (another process, or another connection in this one) has
    it. A lock whose holder died on this host (its pid is gone, or now belongs
    to a newer process) is taken over, and so is one whose holder has not
    reported a phase for ``stale_after`` seconds, wherever it ran.
    ``update_phase(session_id, phase)`` and ``release(session_id, status,
    result)`` take the session's id, so any ``SqliteSyncLock`` of the file can
    end a session. ``hold(node_id)`` is the server's: inside the caller's
    transaction it takes SQLite's write lock, which keeps every other writer
    (and every other ``hold``) out until that transaction ends.
    """

    def __init__(
        self, connection: sqlite3.Connection, transactions: Transactions, *, stale_after: float = DEFAULT_STALE_AFTER
    ) -> None:
        if stale_after <= 0:
            raise InvalidParameterError("stale_after must be > 0 seconds")
        self._connection = connection
        self._transactions = transactions
        self.stale_after = stale_after
        self._token: str | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock (a session it started and has not ended)."""
        return self._token is not None

    def acquire(self, node_id: str) -> str:
        if not isinstance(node_id, str) or not node_id:
            raise InvalidParameterError(f"node_id must be a non-empty string, got {node_id!r}")
        return self._acquire()

    def _acquire(self) -> str:
        if self._token is not None:
            raise LockContentionError("this sync lock is already held by this holder")
        now = time.time()
        pid = os.getpid()
        with self._transactions():
            row = self._connection.execute(
                f'SELECT "pid", "started", "host", "updated_at", "phase" FROM {LOCK} WHERE "id" = 0'
            ).fetchone()
            if row is not None and not self._abandoned(*row[:4], now=now):
                holder_pid, _, host, updated_at, phase = row
                raise LockContentionError(
                    f"another sync of this database is running (pid {holder_pid} on {host}, "
                    f"phase {phase!r}, last seen {now - updated_at:.0f}s ago)"
                )
            token = uuid.uuid4().hex
            self._connection.execute(
                f'INSERT OR REPLACE INTO {LOCK} ("id", "token", "pid", "started", "host", "acquired_at", "updated_at", "phase") '
                "VALUES (0, ?, ?, ?, ?, ?, ?, ?)",
                (token, pid, _start_time(pid), socket.gethostname(), now, now, "acquired"),
            )
        self._token = token
        return token

    def release(self, session_id: str, status: SyncStatus | str, result: DatabaseResult | None = None) -> None:
        """End the session. ``status`` (a :class:`SyncStatus`) and ``result`` say how it ended; this lock
        keeps no history of sessions (``SyncClient.last_sync`` does), so it only checks ``status``.
        Releasing a session that ended already, or was taken over, leaves the lock alone."""
        try:
            SyncStatus(status)
        except ValueError:
            raise InvalidParameterError(f"status must be a SyncStatus, got {status!r}") from None
        self._release(session_id)

    def _release(self, session_id: str | None) -> None:
        if session_id is None:
            return
        with self._transactions():
            self._connection.execute(f'DELETE FROM {LOCK} WHERE "token" = ?', (session_id,))
        if session_id == self._token:
            self._token = None

    def hold(self, node_id: str) -> None:
        """Hold the lock for ``node_id`` until the caller's transaction ends: take SQLite's write lock now
        (waiting for another writer as long as the connection's busy timeout allows). Call it inside
        ``storage.transaction()``: outside a transaction there is nothing to hold it for."""
        if not isinstance(node_id, str) or not node_id:
            raise InvalidParameterError(f"node_id must be a non-empty string, got {node_id!r}")
        if not self._connection.in_transaction:
            raise InvalidParameterError("hold(node_id) holds the lock until the caller's transaction ends: "
                                        "call it inside storage.transaction()")
        with self._transactions():
            self._connection.execute(f'UPDATE {LOCK} SET "id" = "id" WHERE 0')  # a write: takes the write lock

    def update_phase(self, session_id: str, phase: SyncPhase) -> None:
        """Record the session's phase (and that its holder is alive); raise :class:`LockContentionError`
        if the session no longer holds the lock (it ended, or was taken over after stalling)."""
        value = phase.value if isinstance(phase, SyncPhase) else str(phase)
        with self._transactions():
            changed = self._connection.execute(
                f'UPDATE {LOCK} SET "phase" = ?, "updated_at" = ? WHERE "token" = ?', (value, time.time(), session_id)
            ).rowcount
        if changed:
            return
        if session_id == self._token:
            self._token = None
            raise LockContentionError("the sync lock was taken over by another process (this sync stalled too long)")
        raise LockContentionError(f"sync session {session_id!r} does not hold the lock (it ended, or was taken over)")

    def _abandoned(self, pid: int, started: str | None, host: str, updated_at: float, *, now: float) -> bool:
        if now - updated_at > self.stale_after:
            return True
        return host == socket.gethostname() and not _alive(pid, started)

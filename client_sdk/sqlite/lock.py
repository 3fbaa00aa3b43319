"""The sync lock: one row in the database, so every process and connection sees it."""

from __future__ import annotations

import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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

    ``acquire`` raises :class:`LockContentionError` at once when another holder
    (another process, or another connection in this one) has it. A lock whose
    holder died on this host (its pid is gone, or now belongs to a newer
    process) is taken over, and so is one whose holder has not reported a phase
    for ``stale_after`` seconds, wherever it ran.
    """

    def __init__(self, connection: sqlite3.Connection, transactions: Transactions, *, stale_after: float = DEFAULT_STALE_AFTER) -> None:
        if stale_after <= 0:
            raise InvalidParameterError("stale_after must be > 0 seconds")
        self._connection = connection
        self._transactions = transactions
        self.stale_after = stale_after
        self._token: str | None = None

    @property
    def held(self) -> bool:
        return self._token is not None

    def acquire(self) -> None:
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

    def release(self) -> None:
        if self._token is None:
            return
        with self._transactions():
            self._connection.execute(f'DELETE FROM {LOCK} WHERE "token" = ?', (self._token,))
        self._token = None

    @contextmanager
    def hold(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def update_phase(self, phase: str) -> None:
        """Record the phase (and that the holder is alive); raise if the lock was taken over meanwhile.

        Without the lock (e.g. the final ``complete`` or ``failed`` after release) there is nothing to record.
        """
        if self._token is None:
            return
        with self._transactions():
            changed = self._connection.execute(
                f'UPDATE {LOCK} SET "phase" = ?, "updated_at" = ? WHERE "token" = ?', (phase, time.time(), self._token)
            ).rowcount
        if not changed:
            self._token = None
            raise LockContentionError("the sync lock was taken over by another process (this sync stalled too long)")

    def _abandoned(self, pid: int, started: str | None, host: str, updated_at: float, *, now: float) -> bool:
        if now - updated_at > self.stale_after:
            return True
        return host == socket.gethostname() and not _alive(pid, started)

"""The sync lock: one sync per database across connections and processes, and recovery from dead holders.

The lock is the documented ``SyncLock``: sessions (``acquire(node_id) -> session_id``,
``update_phase(session_id, phase)``, ``release(session_id, status, result)``) and
``hold(node_id)`` for the rest of a transaction. The last test covers the deprecated
forms the engine calls until it moves to sessions.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from client_sdk import DatabaseResult, SyncPhase, SyncStatus
from client_sdk.engine.protocols import SyncLock
from client_sdk.errors import InvalidParameterError, LockContentionError
from client_sdk.sqlite import SqliteSyncStorage

from .conftest import MODELS


def phase(storage: SqliteSyncStorage) -> tuple[str] | None:
    row: tuple[str] | None = storage.connection.execute("SELECT phase FROM _sync_lock").fetchone()
    return row


def test_a_session_holds_the_lock_from_acquire_to_release(storage: SqliteSyncStorage) -> None:
    lock = storage.lock()
    assert isinstance(lock, SyncLock)
    session = lock.acquire("laptop")
    assert isinstance(session, str) and session and lock.held
    lock.update_phase(session, SyncPhase.EXCHANGING)
    assert phase(storage) == ("exchanging",)
    with pytest.raises(LockContentionError):
        lock.acquire("laptop")
    with pytest.raises(LockContentionError):
        storage.lock().acquire("laptop")
    lock.release(session, SyncStatus.FAILED, DatabaseResult())
    assert not lock.held and phase(storage) is None
    with pytest.raises(LockContentionError, match="does not hold"):
        lock.update_phase(session, SyncPhase.COMPLETE)  # the session has ended
    lock.release(session, SyncStatus.FAILED)  # twice: nothing more to release
    other = storage.lock()
    again = other.acquire("laptop")
    assert again != session
    lock.update_phase(again, "committing")  # any lock object of the file can report a session's phase
    assert phase(storage) == ("committing",)
    lock.release(again, "succeeded")  # ... and end it
    assert phase(storage) is None


def test_the_lock_refuses_what_is_not_a_node_or_a_status(storage: SqliteSyncStorage) -> None:
    lock = storage.lock()
    for node_id in ("", None, 7):
        with pytest.raises(InvalidParameterError, match="node_id"):
            lock.acquire(node_id)  # type: ignore[arg-type]
    session = lock.acquire("laptop")
    with pytest.raises(InvalidParameterError, match="SyncStatus"):
        lock.release(session, "fine")  # type: ignore[arg-type]
    lock.release(session, SyncStatus.SUCCEEDED)
    with pytest.raises(InvalidParameterError):
        storage.lock(stale_after=0)


def test_hold_keeps_other_writers_out_until_the_transaction_ends(path: Path, storage: SqliteSyncStorage) -> None:
    lock = storage.lock()
    with pytest.raises(InvalidParameterError, match="transaction"):
        lock.hold("server")  # outside a transaction there is nothing to hold the lock for
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        storage.connection.execute("BEGIN")  # an app's deferred transaction: no write lock yet
        assert lock.hold("server") is None
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        storage.connection.execute("COMMIT")
        other.execute("BEGIN IMMEDIATE")
        other.execute("COMMIT")
        with storage.transaction():
            lock.hold("server")
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert not lock.held and phase(storage) is None  # a hold is no session


def test_a_second_connection_is_refused_at_once(path: Path, storage: SqliteSyncStorage) -> None:
    other = SqliteSyncStorage(path, MODELS)
    session = storage.lock().acquire("laptop")
    started = time.monotonic()
    with pytest.raises(LockContentionError, match="acquired"):
        other.lock().acquire("laptop")
    assert time.monotonic() - started < 5
    storage.lock().release(session, SyncStatus.SUCCEEDED)
    other.lock().release(other.lock().acquire("laptop"), SyncStatus.SUCCEEDED)


def test_another_process_holds_it_until_it_is_killed(path: Path, storage: SqliteSyncStorage) -> None:
    script = textwrap.dedent(
        """
        import sys
        from client_sdk.sqlite import SqliteSyncStorage
        storage = SqliteSyncStorage(sys.argv[1], {"lists": "todo.List", "tasks": "todo.Task"})
        lock = storage.lock()
        session = lock.acquire("holder")
        lock.update_phase(session, "exchanging")
        print("held", flush=True)
        sys.stdin.read()
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockContentionError, match=f"pid {holder.pid}.*exchanging"):
            storage.lock().acquire("taker")
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)
    lock = storage.lock()
    lock.release(lock.acquire("taker"), SyncStatus.SUCCEEDED)  # the dead holder's lock is taken over


def test_a_stale_lock_is_taken_over_and_its_holder_told(path: Path, storage: SqliteSyncStorage) -> None:
    stalled = SqliteSyncStorage(path, MODELS).lock()
    lost = stalled.acquire("laptop")
    # the holder runs elsewhere and has not reported for a while
    storage.connection.execute("UPDATE _sync_lock SET host = 'elsewhere', updated_at = updated_at - 120")
    storage.connection.commit()
    with pytest.raises(LockContentionError):
        storage.lock(stale_after=600).acquire("laptop")
    taker = storage.lock(stale_after=60)
    session = taker.acquire("laptop")
    with pytest.raises(LockContentionError, match="taken over"):
        stalled.update_phase(lost, SyncPhase.COMMITTING)
    assert not stalled.held
    stalled.release(lost, SyncStatus.FAILED)  # releasing a lost lock leaves the new holder alone
    with pytest.raises(LockContentionError):
        storage.lock().acquire("laptop")
    taker.release(session, SyncStatus.SUCCEEDED)

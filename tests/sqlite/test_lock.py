"""The sync lock: one sync per database across connections and processes, and recovery from dead holders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from client_sdk.engine.protocols import SyncLock
from client_sdk.errors import InvalidParameterError, LockContentionError
from client_sdk.sqlite import SqliteSyncStorage

from .conftest import MODELS


def test_hold_acquires_and_always_releases(storage: SqliteSyncStorage) -> None:
    lock = storage.lock()
    assert isinstance(lock, SyncLock)
    with pytest.raises(RuntimeError):
        with lock.hold():
            lock.update_phase("exchanging")
            assert storage.connection.execute("SELECT phase FROM _sync_lock").fetchone() == ("exchanging",)
            with pytest.raises(LockContentionError):
                lock.acquire()
            raise RuntimeError
    assert not lock.held
    with lock.hold():
        pass
    lock.update_phase("complete")  # after release: nothing to record
    assert storage.connection.execute("SELECT count(*) FROM _sync_lock").fetchone() == (0,)
    with pytest.raises(InvalidParameterError):
        storage.lock(stale_after=0)


def test_a_second_connection_is_refused_at_once(path: Path, storage: SqliteSyncStorage) -> None:
    other = SqliteSyncStorage(path, MODELS)
    with storage.lock().hold():
        started = time.monotonic()
        with pytest.raises(LockContentionError, match="acquired"):
            other.lock().acquire()
        assert time.monotonic() - started < 5
    with other.lock().hold():
        pass


def test_another_process_holds_it_until_it_is_killed(path: Path, storage: SqliteSyncStorage) -> None:
    script = textwrap.dedent(
        """
        import sys
        from client_sdk.sqlite import SqliteSyncStorage
        storage = SqliteSyncStorage(sys.argv[1], {"lists": "todo.List", "tasks": "todo.Task"})
        lock = storage.lock()
        lock.acquire()
        lock.update_phase("exchanging")
        print("held", flush=True)
        sys.stdin.read()
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockContentionError, match=f"pid {holder.pid}.*exchanging"):
            storage.lock().acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)
    with storage.lock().hold():  # the dead holder's lock is taken over
        pass


def test_a_stale_lock_is_taken_over_and_its_holder_told(path: Path, storage: SqliteSyncStorage) -> None:
    stalled = SqliteSyncStorage(path, MODELS).lock()
    stalled.acquire()
    # the holder runs elsewhere and has not reported for a while
    storage.connection.execute("UPDATE _sync_lock SET host = 'elsewhere', updated_at = updated_at - 120")
    storage.connection.commit()
    with pytest.raises(LockContentionError):
        storage.lock(stale_after=600).acquire()
    taker = storage.lock(stale_after=60)
    taker.acquire()
    with pytest.raises(LockContentionError, match="taken over"):
        stalled.update_phase("committing")
    stalled.release()  # releasing a lost lock leaves the new holder alone
    with pytest.raises(LockContentionError):
        storage.lock().acquire()
    taker.release()

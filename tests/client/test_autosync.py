"""Sync on reconnect: the auto-sync thread, and one sync at a time per database."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from client_sdk import (
    DatabaseResult,
    HttpTransport,
    InvalidParameterError,
    LockContentionError,
    SyncAbortedError,
    SyncClient,
)
from client_sdk.protocol.wire import SyncManifest
from tests.conftest import NOTES, Device, Server, create_file
from tests.loopback import free_port
from tests.serverdb import Database, server_rows

from .conftest import ROOT, wait_until

FAST = {"poll": 0.02, "max_backoff": 0.1}


def write(client: SyncClient, sql: str) -> None:
    with client.connection:
        client.connection.execute(sql)


def test_a_change_made_offline_reaches_the_server_once_it_starts_without_calling_sync(
    server: Server, server_database: Database, device: Device
) -> None:
    port = free_port()
    client = device("laptop", f"http://127.0.0.1:{port}/sync/")
    results: list[DatabaseResult] = []
    errors: list[BaseException] = []
    auto = client.start_auto_sync(interval=3600, on_result=results.append, on_error=errors.append, **FAST)
    write(client, "INSERT INTO notes VALUES ('n1', 'written offline', 0)")

    wait_until(lambda: auto.failures >= 3, what="three failed reachability checks")
    assert auto.next_delay() == auto.max_backoff > auto.poll  # backing off, capped
    assert results == [] and errors == []  # offline is not an error
    assert client.pending_count() == 1

    server(port=port)
    wait_until(lambda: server_rows(server_database).get("n1"), what="the note on the server")
    wait_until(lambda: results, what="the result callback")
    assert results[0].pushed == {"notes.Note": ["n1"]}
    assert client.pending_changes() == []
    assert auto.failures == 0 and auto.next_delay() == auto.poll
    assert client.last_sync is not None and client.last_sync.ok
    assert errors == []


def test_new_local_changes_from_any_connection_are_synced_between_intervals(
    server: Server, server_database: Database, device: Device
) -> None:
    client = device("laptop", server())
    results: list[DatabaseResult] = []
    client.start_auto_sync(interval=3600, on_result=results.append, **FAST)
    wait_until(lambda: results, what="the first sync")

    other = sqlite3.connect(client.path)
    with other:
        other.execute("INSERT INTO notes VALUES ('n1', 'from another connection', 0)")
    other.close()
    wait_until(lambda: "n1" in server_rows(server_database), what="the note on the server")
    write(client, "UPDATE notes SET pinned = 1 WHERE id = 'n1'")
    wait_until(lambda: server_rows(server_database)["n1"] == ("from another connection", 1), what="the edit")


def test_sync_errors_reach_the_error_callback(server: Server, device: Device) -> None:
    url = server(tokens={"right-token": frozenset({"laptop"})})
    path = device("laptop").path
    errors: list[BaseException] = []
    with SyncClient(path, models=NOTES, transport=HttpTransport(url, retries=0, auth_token="wrong-token")) as client:
        auto = client.start_auto_sync(interval=3600, on_error=errors.append, **FAST)
        wait_until(lambda: errors, what="the error callback")
        assert isinstance(errors[0], SyncAbortedError) and errors[0].status == 401
        assert auto.failures >= 1
        last = client.last_sync
        assert last is not None and not last.ok and "401" in (last.error or "")


def test_stop_ends_the_thread_and_auto_sync_can_start_again(server: Server, device: Device) -> None:
    client = device("laptop", server())
    auto = client.start_auto_sync(interval=3600, **FAST)
    assert auto.running
    with pytest.raises(InvalidParameterError, match="already running"):
        client.start_auto_sync()
    auto.stop()
    assert not auto.running
    assert "client-sdk-autosync" not in {thread.name for thread in threading.enumerate()}

    again = client.start_auto_sync(interval=3600, **FAST)
    assert again.running
    client.stop_auto_sync()
    assert not again.running


def test_auto_sync_needs_somewhere_to_sync_to(device: Device) -> None:
    with pytest.raises(InvalidParameterError, match="server_url or a transport"):
        device("laptop").start_auto_sync()


class GatedTransport(HttpTransport):
    """Real HTTP, plus a log of when each thread's round starts and ends; the first round of the
    auto-sync thread calls ``inside`` before going on."""

    def __init__(self, url: str) -> None:
        super().__init__(url, retries=0)
        self.log: list[tuple[str, str]] = []
        self.inside = lambda: None
        self._gate_used = False

    def exchange(self, manifest: SyncManifest) -> SyncManifest:
        name = threading.current_thread().name
        self.log.append(("start", name))
        try:
            if name == "client-sdk-autosync" and not self._gate_used:
                self._gate_used = True
                self.inside()
            return super().exchange(manifest)
        finally:
            self.log.append(("end", name))


def test_a_manual_sync_while_auto_sync_runs_waits_for_it(tmp_path: Path, server: Server) -> None:
    transport = GatedTransport(server())
    path = create_file(tmp_path / "laptop.db")
    with SyncClient(path, models=NOTES, transport=transport) as client:
        write(client, "INSERT INTO notes VALUES ('n1', 'milk', 0)")
        manual_results: list[DatabaseResult] = []
        manual = threading.Thread(target=lambda: manual_results.append(client.sync()), name="manual")
        manual_started_inside: list[bool] = []

        def start_a_manual_sync() -> None:
            manual.start()
            manual_started_inside.append(started_within(transport, "manual", seconds=0.5))

        transport.inside = start_a_manual_sync
        auto_results: list[DatabaseResult] = []
        client.start_auto_sync(interval=3600, on_result=auto_results.append, **FAST)
        wait_until(lambda: auto_results, what="the auto sync")
        manual.join(15)

    assert manual_started_inside == [False]
    assert manual_results and manual_results[0].ok
    depth = 0
    for event, _ in transport.log:
        depth += 1 if event == "start" else -1
        assert depth in (0, 1), f"two rounds at once: {transport.log}"
    assert transport.log.index(("start", "manual")) > transport.log.index(("end", "client-sdk-autosync"))


def started_within(transport: GatedTransport, thread: str, seconds: float) -> bool:
    """Whether ``thread`` starts a round within ``seconds`` (a bounded look, not a measurement)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ("start", thread) in transport.log:
            return True
        time.sleep(0.01)
    return False


HOLDER = """
import sys
from client_sdk import HttpTransport, SyncClient, SyncPhase

held = []

def on_phase(phase):
    if phase is SyncPhase.EXCHANGING and not held:
        held.append(phase)
        print("exchanging", flush=True)
        sys.stdin.readline()  # hold the first round here until told to go on

with SyncClient(sys.argv[1], models=None, transport=HttpTransport(sys.argv[2], retries=0), on_phase=on_phase) as client:
    client.sync()
print("done", flush=True)
"""


def test_a_second_process_cannot_sync_the_same_database_meanwhile(server: Server, device: Device) -> None:
    url = server()
    client = device("laptop", url)
    write(client, "INSERT INTO notes VALUES ('n1', 'milk', 0)")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(client.path), url], cwd=ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "exchanging\n"
        with pytest.raises(LockContentionError, match="another sync of this database is running"):
            client.sync()
        assert client.last_sync is not None and (client.last_sync.error or "").startswith("LockContentionError")
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == "done\n"
        assert holder.wait(30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert client.pending_changes() == []  # the other process pushed it
    assert client.sync().ok

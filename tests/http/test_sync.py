"""SDK nodes syncing with a real server_stub over HTTP on 127.0.0.1."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

from client_sdk import ClockDriftError, DatabaseEngine, DatabaseResult, HybridLogicalClock, SyncAbortedError
from client_sdk.protocol.hlc import system_ms
from client_sdk.sqlite.storage import SqliteSyncStorage
from client_sdk.transport import HttpTransport
from tests.engine.harness import LegacyClientEngine, Recorder

from .conftest import LIST, TODO_MODELS, TODO_SCHEMA, ServerFactory


class Device:
    """One client node: its own SQLite file written with plain SQL, an HttpTransport to the server, every round recorded."""

    def __init__(
        self,
        base: str,
        folder: Path,
        name: str,
        *,
        auth_token: str | None = None,
        wall_ms: Callable[[], int] = system_ms,
        engine_class: type[DatabaseEngine] = DatabaseEngine,
        **options: object,
    ) -> None:
        self.name = name
        path = folder / f"{name}-{uuid.uuid4().hex[:6]}.db"
        with closing(sqlite3.connect(path)) as connection:
            connection.executescript(TODO_SCHEMA)
        self.storage = SqliteSyncStorage(path, TODO_MODELS, role="client", node_id=name)
        self.http = HttpTransport(base + "/sync/", retry_delay=0, auth_token=auth_token)
        self.transport = Recorder(self.http)
        clock = HybridLogicalClock(self.storage.clock.state, wall_ms=wall_ms)
        self.engine = engine_class(self.storage, self.storage.dependency_graph(), clock, name,
                                   transaction=self.storage.transaction, transport=self.transport, **options)

    def write(self, table: str, key: str, **values: object) -> None:
        """Insert or update a row with plain SQL, as the app would."""
        columns = ["id", *values]
        updates = ", ".join(f"{name} = excluded.{name}" for name in values)
        with self.storage.connection as connection:
            connection.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                f"ON CONFLICT (id) DO UPDATE SET {updates}", [key, *values.values()])

    def delete(self, table: str, key: str) -> None:
        with self.storage.connection as connection:
            connection.execute(f"DELETE FROM {table} WHERE id = ?", (key,))

    def rows(self, table: str = "Task") -> dict[str, dict]:
        cursor = self.storage.connection.execute(f"SELECT * FROM {table}")
        names = [column[0] for column in cursor.description]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cursor}

    def sync(self) -> DatabaseResult:
        return self.engine.sync()

    def close(self) -> None:
        self.http.close()
        self.storage.close()


class Devices:
    """Makes devices for one test and closes them after it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.made: list[Device] = []

    def __call__(self, base: str, name: str, **options: object) -> Device:
        self.made.append(Device(base, self.folder, name, **options))  # type: ignore[arg-type]
        return self.made[-1]


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Devices]:
    devices = Devices(tmp_path)
    yield devices
    for made in devices.made:
        made.close()


def new_key() -> str:
    return str(uuid.uuid4())


def test_two_devices_converge_field_by_field(todo_server: ServerFactory, device: Devices) -> None:
    base = todo_server()
    a, b = device(base, "device-a"), device(base, "device-b")
    groceries, milk = new_key(), new_key()
    a.write("TodoList", groceries, name="Groceries")
    a.write("Task", milk, list_id=groceries, title="milk", done=False, priority=1, notes="")
    a.sync()
    b.sync()
    assert b.rows() == a.rows() and len(b.rows()) == 1
    a.write("Task", milk, title="oat milk")
    b.write("Task", milk, done=True)
    a.sync()
    b.sync()
    a.sync()
    assert a.rows() == b.rows() and a.rows()[milk]["title"] == "oat milk" and a.rows()[milk]["done"] == 1
    assert a.rows("TodoList") == b.rows("TodoList") == {groceries: {"id": groceries, "name": "Groceries"}}


def test_a_push_is_not_echoed_back_and_a_delete_settles(todo_server: ServerFactory, device: Devices) -> None:
    a = device(todo_server(), "device-a")
    key = new_key()
    a.write("TodoList", key, name="x")
    assert a.sync().rounds == 1  # the push: its empty, complete answer ends the sync
    assert all(response.change_count == 0 for response in a.transport.responses)
    a.delete("TodoList", key)
    assert a.sync().rounds == 1 and a.storage.pending_count() == 0


def test_a_client_like_the_existing_one_finishes_after_a_delete(todo_server: ServerFactory, device: Devices) -> None:
    base = todo_server()
    legacy = device(base, "legacy", engine_class=LegacyClientEngine, max_rounds=20)
    key = new_key()
    legacy.write("TodoList", key, name="x")
    legacy.sync()
    legacy.delete("TodoList", key)
    assert legacy.sync().rounds <= 3
    fresh = device(base, "fresh")
    fresh.sync()
    assert fresh.rows("TodoList") == {}


def test_paging_delivers_every_row_exactly_once(todo_server: ServerFactory, device: Devices) -> None:
    base = todo_server(batch_size=7)
    writer = device(base, "writer", batch_size=5)
    keys = [new_key() for _ in range(40)]
    for key in keys:
        writer.write("TodoList", key, name=key[:4])
    for key in keys[:10]:
        writer.delete("TodoList", key)
    writer.sync()
    reader = device(base, "reader")
    result = reader.sync()
    assert result.rounds > 2 and set(reader.rows("TodoList")) == set(keys[10:])
    received = reader.transport.counts("pull", LIST)
    assert set(received) >= set(keys[10:]) and max(received.values()) == 1


def test_refusals_reach_the_sdk_as_sync_aborted_errors(todo_server: ServerFactory, device: Devices) -> None:
    base = todo_server(tokens={"token-a": frozenset({"device-a"})})
    cases = [
        (device(base, "device-a"), 401, "Missing or invalid bearer token"),
        (device(base, "device-b", auth_token="token-a"), 403, "This token may not sync as this node_id"),
        (device(base, "device-a", auth_token="token-a", wall_ms=lambda: system_ms() - 3_600_000), 409, "Sync aborted"),
    ]
    for node, status, text in cases:
        node.write("TodoList", new_key(), name="x")
        with pytest.raises(SyncAbortedError) as caught:
            node.sync()
        assert (caught.value.status, caught.value.server_error) == (status, text)
        assert node.storage.get_checkpoint() == 0 and node.storage.pending_count() == 1


def test_fifty_clients_at_once_lose_no_write(todo_server: ServerFactory, device: Devices) -> None:
    base = todo_server()
    nodes = [device(base, f"device-{i:02d}") for i in range(50)]
    written = {node.name: [new_key() for _ in range(4)] for node in nodes}
    for node in nodes:
        for key in written[node.name]:
            node.write("TodoList", key, name=node.name)
    start = threading.Barrier(len(nodes))

    def run(node: Device) -> None:
        start.wait()
        node.sync()

    with ThreadPoolExecutor(len(nodes)) as pool:
        for future in [pool.submit(run, node) for node in nodes]:
            future.result()  # re-raises any error, "database is locked" included
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(Device.sync, nodes))
    everything = {key for keys in written.values() for key in keys}
    for node in nodes:
        assert set(node.rows("TodoList")) == everything and node.storage.pending_count() == 0


def test_clock_drift_over_http_is_a_clock_drift_error_naming_both_clocks(todo_server: ServerFactory, tmp_path: Path) -> None:
    """Nothing is applied and the checkpoint stays where it was."""
    url = todo_server()
    path = tmp_path / "drifting.db"
    with closing(sqlite3.connect(path)) as setup:
        setup.executescript(TODO_SCHEMA)
    storage = SqliteSyncStorage(path, TODO_MODELS)
    hour_behind = HybridLogicalClock(storage.clock.state, wall_ms=lambda: system_ms() - 3_600_000)
    engine = DatabaseEngine(storage, storage.dependency_graph(), hour_behind, storage.node_id,
                            transaction=storage.transaction, transport=HttpTransport(url + "/sync/", retries=0))
    storage.connection.execute("INSERT INTO TodoList (id, name) VALUES ('k', 'offline edit')")
    with pytest.raises(ClockDriftError, match="our clock: .*theirs") as refused:
        engine.sync()
    assert refused.value.status == 409
    assert storage.get_checkpoint() == 0 and len(storage.get_pending(LIST)) == 1
    storage.close()

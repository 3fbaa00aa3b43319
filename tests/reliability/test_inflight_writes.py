"""A write made WHILE a sync round is in flight is never lost (issue #14).

A real server_stub over HTTP on 127.0.0.1, a SyncClient on a real file, and a
second writer that deletes, re-inserts or updates a row at each point of a
round: right after the request was collected, right after the server
committed it (before the answer is applied), and while a pulled page is being
applied (the writer then waits for the sync's transaction, and writes as soon
as it commits). Afterwards, within two more syncs, the writer's final state is
the state of the device, of the server and of a second device.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from client_sdk import DatabaseEngine, HttpTransport, SqliteSyncStorage, SyncClient, SyncStage
from tests.conftest import NOTES, Server, create_file, rows
from tests.reliability.inflight import HookedTransport
from tests.serverdb import Database, server_rows

pytestmark = pytest.mark.sqlite_only("the device's writes during its own sync are the subject; any server does")

Write = Callable[[sqlite3.Connection], None]


def insert_k1(connection: sqlite3.Connection) -> None:
    connection.execute("INSERT INTO notes (id, body, pinned) VALUES ('k1', 'first', 1)")


def delete_k1(connection: sqlite3.Connection) -> None:
    connection.execute("DELETE FROM notes WHERE id = 'k1'")


def reinsert_k1(connection: sqlite3.Connection) -> None:
    connection.execute("INSERT INTO notes (id, body, pinned) VALUES ('k1', 'again', 1)")


def update_k1(connection: sqlite3.Connection) -> None:
    connection.execute("UPDATE notes SET body = 'edited' WHERE id = 'k1'")


# op -> (k1 synced before?, the device's change the round pushes, the write made during the round, k1's final row)
OPS: dict[str, tuple[bool, Write | None, Write, tuple[Any, ...] | None]] = {
    "delete": (True, None, delete_k1, None),
    "delete the insert being pushed": (False, insert_k1, delete_k1, None),
    "reinsert": (True, delete_k1, reinsert_k1, ("again", 1)),
    "update": (True, None, update_k1, ("edited", 1)),
    "update the insert being pushed": (False, insert_k1, update_k1, ("edited", 1)),
}


class World:
    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp_path = tmp_path
        self.url = url
        self.transport = HookedTransport(HttpTransport(url, retries=0, timeout=10.0))
        self.device = self._open("device", self.transport)
        self.other = self._open("other", HttpTransport(url, retries=0, timeout=10.0))

    def _open(self, name: str, transport: Any) -> SyncClient:
        path = create_file(self.tmp_path / f"{name}.db")
        return SyncClient(path, models=NOTES, node_id=name, transport=transport)

    def write(self, via: str, change: Write) -> None:
        if via == "client.connection":
            with self.device.connection as connection:
                change(connection)
            return
        with closing(sqlite3.connect(self.device.path, timeout=30)) as connection, connection:
            change(connection)

    def close(self) -> None:
        self.device.close()
        self.other.close()


@pytest.fixture
def world(tmp_path: Path, server: Server) -> Iterator[World]:
    built = World(tmp_path, server())
    yield built
    built.close()


POINTS = ["after collect", "after the server commits", "while a pulled page is applied"]
VIAS = ["another connection", "client.connection"]


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("via", VIAS)
def test_a_write_during_a_round_survives(world: World, server_database: Database, op: str, point: str, via: str) -> None:
    if via == "client.connection" and point == "while a pulled page is applied":
        pytest.skip("the app's connection is the sync's own while it applies a page: its writes wait for sync()")
    synced, before, during, expected = OPS[op]
    if synced:
        world.write("another connection", insert_k1)
        world.device.sync()
    if before is not None:
        world.write("another connection", before)
    # something to pull, so the round applies a page
    with world.other.connection as connection:
        connection.execute("INSERT INTO notes (id, body, pinned) VALUES ('k2', 'from other', 0)")
    world.other.sync()

    writer: list[threading.Thread] = []
    if point == "after collect":
        world.transport.at_next_exchange("before_send", lambda: world.write(via, during))
    elif point == "after the server commits":
        world.transport.at_next_exchange("after_answer", lambda: world.write(via, during))
    else:
        def on_progress(stage: SyncStage, current: int, total: int) -> None:
            if stage is SyncStage.MUTATE and not writer:
                writer.append(threading.Thread(target=world.write, args=(via, during)))
                writer[0].start()
        world.device.engine.progress = on_progress
    world.device.sync()
    world.device.engine.progress = None
    for thread in writer:
        thread.join(30)
    assert point != "while a pulled page is applied" or writer, "no page was applied"

    world.device.sync()
    world.device.sync()
    world.other.sync()
    wanted = {"k2": ("from other", 0)}
    if expected is not None:
        wanted["k1"] = expected
    assert rows(world.device.path) == wanted
    assert server_rows(server_database) == wanted
    assert rows(world.other.path) == wanted
    assert world.device.pending_changes() == []


class ReinsertWhileCollecting(SqliteSyncStorage):
    """Right after sync reads the pending tombstones, another connection (on its own thread) re-creates
    a deleted key; the collect waits for it at most a moment, so it sees the write only if its reads
    are not one snapshot."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.armed = False
        self.writer = threading.Thread(target=self._reinsert)

    def get_pending_deletes(self, label: str) -> dict[str, int]:
        deletes = super().get_pending_deletes(label)
        if self.armed:
            self.armed = False
            self.writer.start()
            self.writer.join(0.5)
        return deletes

    def _reinsert(self) -> None:
        with closing(sqlite3.connect(self.path or "", timeout=30)) as connection, connection:
            reinsert_k1(connection)


def test_a_key_recreated_while_sync_collects_is_never_both_row_and_tombstone(
    tmp_path: Path, server: Server, server_database: Database
) -> None:
    url = server()
    path = create_file(tmp_path / "device.db")
    with closing(sqlite3.connect(path)) as connection, connection:
        insert_k1(connection)
    storage = ReinsertWhileCollecting(path, NOTES, node_id="device")
    transport = HttpTransport(url, retries=0, timeout=10.0)
    engine = DatabaseEngine(storage, storage.dependency_graph(), storage.clock, "device",
                            transaction=storage.transaction, transport=transport)
    engine.sync()
    with closing(sqlite3.connect(path)) as connection, connection:
        delete_k1(connection)
    storage.armed = True
    assert engine.sync().ok
    storage.writer.join(30)  # it committed during that sync (or right after): two more syncs carry it
    assert engine.sync().ok
    assert engine.sync().ok
    assert server_rows(server_database) == rows(path) == {"k1": ("again", 1)}
    transport.close()
    storage.close()

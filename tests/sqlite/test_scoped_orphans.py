"""Scoped sync (issue #17): a device's change under a list that leaves the user's view (deleted or unshared)
before the change reaches the server never stops that device's syncs.

The change leaves the device with the list, as sync's own write (nobody hears of a delete), and the
conflict log keeps its values for the app to restore; a task the user moved there comes back as the
server holds it. Devices are SqliteSyncStorage clients syncing through the real JSON round trip with a
scoped server storage (``test_scopes.py``'s setup, here with an optional page size).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path

import pytest

from client_sdk import DatabaseEngine, DatabaseResult, SqliteSyncStorage
from tests.reliability.inflight import POINTS, HookedTransport
from tests.sqlite.test_scopes import MODELS, SCHEMA, SCOPES, AsUser, ids, write

TASK = "todo.Task"


class Scoped:
    """A scoped server storage and engine (answering pages of ``batch_size`` rows, if given), and devices."""

    def __init__(self, folder: Path, stack: ExitStack, batch_size: int | None = None) -> None:
        self.folder = folder
        self.stack = stack
        path = folder / "server.db"
        with closing(sqlite3.connect(path)) as setup:
            setup.executescript(SCHEMA)
        self.storage = self.open(SqliteSyncStorage(path, MODELS, role="server", scopes=SCOPES))
        self.server = DatabaseEngine(self.storage, self.storage.dependency_graph(), self.storage.clock, "server",
                                     transaction=self.storage.transaction, batch_size=batch_size)

    def open(self, storage: SqliteSyncStorage) -> SqliteSyncStorage:
        self.stack.callback(storage.close)
        return storage

    def device(self, name: str, user: str) -> tuple[DatabaseEngine, sqlite3.Connection]:
        path = self.folder / f"{name}.db"
        with closing(sqlite3.connect(path)) as setup:
            setup.executescript(SCHEMA)
        storage = self.open(SqliteSyncStorage(path, MODELS, node_id=name))
        engine = DatabaseEngine(storage, storage.dependency_graph(), storage.clock, name, transaction=storage.transaction,
                                transport=HookedTransport(AsUser(self.server, self.storage, user)))
        return engine, storage.connection

    def shared_list(self) -> tuple[DatabaseEngine, sqlite3.Connection, DatabaseEngine, sqlite3.Connection]:
        """alice's list A (task a1) shared with bob, bob's own list B (task b0): both devices synced."""
        alice, alice_db = self.device("alice-laptop", "alice")
        bob, bob_db = self.device("bob-laptop", "bob")
        write(alice_db, "INSERT INTO todo_lists VALUES ('A', 'alice', 'groceries')")
        write(alice_db, "INSERT INTO tasks VALUES ('a1', 'A', 'milk')")
        write(alice_db, "INSERT INTO list_members VALUES ('m1', 'A', 'bob')")
        write(bob_db, "INSERT INTO todo_lists VALUES ('B', 'bob', 'tools')")
        write(bob_db, "INSERT INTO tasks VALUES ('b0', 'B', 'hammer')")
        assert alice.sync().ok and bob.sync().ok and alice.sync().ok
        return alice, alice_db, bob, bob_db

    def on_server(self, keys: list[str]) -> tuple[set[str], set[str]]:
        """Of ``keys``, the tasks the server holds and those it holds a tombstone of."""
        return set(self.storage.get_records(TASK, keys)), set(self.storage.get_tombstones(TASK, keys))


@pytest.fixture
def scoped(tmp_path: Path) -> Iterator[Scoped]:
    with ExitStack() as stack:
        yield Scoped(tmp_path, stack)


def logged(result: DatabaseResult) -> dict[str, dict[str, object]]:
    """key -> the device's value of each field its conflict log entry names."""
    return {entry.conflict.key: {clash.field_name: clash.local_value for clash in entry.conflict.field_conflicts}
            for entry in result.conflict_log}


def leave(alice_db: sqlite3.Connection, how: str) -> None:
    """alice takes list A from bob's view: unshares it, or deletes it (its task and its share first)."""
    write(alice_db, "DELETE FROM list_members WHERE id = 'm1'")
    if how == "deleted":
        write(alice_db, "DELETE FROM tasks WHERE list_id = 'A'")
        write(alice_db, "DELETE FROM todo_lists WHERE id = 'A'")


@pytest.mark.parametrize("how", ["deleted", "unshared"])
def test_a_new_task_of_a_list_that_left_the_scope_leaves_the_device_with_its_values_logged(scoped: Scoped, how: str
                                                                                           ) -> None:
    alice, alice_db, bob, bob_db = scoped.shared_list()
    write(bob_db, "INSERT INTO tasks VALUES ('b1', 'A', 'bread')")  # bob is offline
    leave(alice_db, how)
    assert alice.sync().ok
    result = bob.sync()
    assert {error["key"] for error in result.errors} == {"b1"} and not result.ok
    assert logged(result) == {"b1": {"id": "b1", "list_id": "A", "title": "bread"}}
    assert ids(bob_db, "todo_lists") == ["B"] and ids(bob_db, "tasks") == ["b0"]
    assert bob.storage.pending_count() == 0
    assert bob.sync().moved_nothing
    assert scoped.on_server(["b1"]) == (set(), set())  # nothing of b1 ever reached the server
    assert alice.sync().ok
    assert ids(alice_db, "tasks") == ([] if how == "deleted" else ["a1"])


@pytest.mark.parametrize("page", [None, 2])
def test_a_task_moved_into_a_list_that_left_the_scope_comes_back_as_the_server_holds_it(tmp_path: Path,
                                                                                        page: int | None) -> None:
    """Paged, the task's row comes back on the first page and the list's departure on the last."""
    with ExitStack() as stack:
        scoped = Scoped(tmp_path, stack, batch_size=page)
        alice, alice_db, bob, bob_db = scoped.shared_list()
        write(bob_db, "UPDATE tasks SET list_id = 'A', title = 'hammer for alice' WHERE id = 'b0'")
        write(alice_db, "INSERT INTO todo_lists VALUES ('S', 'alice', 'shared too')")
        write(alice_db, "INSERT INTO list_members VALUES ('m2', 'S', 'bob')")
        write(alice_db, "INSERT INTO tasks VALUES ('s1', 'S', 'x'), ('s2', 'S', 'y'), ('s3', 'S', 'z')")
        leave(alice_db, "unshared")
        assert alice.sync().ok
        result = bob.sync()
        assert [(error["key"], "outside your scope" in str(error["message"])) for error in result.errors] == [("b0", True)]
        assert logged(result) == {"b0": {"list_id": "A", "title": "hammer for alice"}}
        assert bob_db.execute("SELECT list_id, title FROM tasks WHERE id = 'b0'").fetchone() == ("B", "hammer")
        assert ids(bob_db, "todo_lists") == ["B", "S"] and ids(bob_db, "tasks") == ["b0", "s1", "s2", "s3"]
        assert bob.storage.pending_count() == 0 and bob.sync().moved_nothing
        assert scoped.on_server(["b0"]) == ({"b0"}, set())
        assert alice.sync().ok and ids(alice_db, "tasks") == ["a1", "s1", "s2", "s3"]


@pytest.mark.parametrize("point", POINTS)
def test_a_second_writer_during_a_scoped_sync_loses_nothing(scoped: Scoped, point: str) -> None:
    """While bob's round is in flight another connection adds a task to the list leaving his view (it goes
    with the list, logged) and one to his own list (pushed as usual)."""
    alice, alice_db, bob, bob_db = scoped.shared_list()
    write(bob_db, "INSERT INTO tasks VALUES ('b1', 'A', 'bread')")
    leave(alice_db, "deleted")
    assert alice.sync().ok

    def second_writer() -> None:
        with closing(sqlite3.connect(scoped.folder / "bob-laptop.db")) as other:
            other.execute("PRAGMA foreign_keys = ON")
            write(other, "INSERT INTO tasks VALUES ('b2', 'A', 'butter')")
            write(other, "INSERT INTO tasks VALUES ('b3', 'B', 'nails')")

    assert isinstance(bob.transport, HookedTransport)
    bob.transport.at_next_exchange(point, second_writer)
    result = bob.sync()
    assert logged(result)["b2"] == {"id": "b2", "list_id": "A", "title": "butter"} and "b1" in logged(result)
    assert ids(bob_db, "tasks") == ["b0", "b3"]
    assert bob.sync().ok and bob.storage.pending_count() == 0
    assert scoped.on_server(["b1", "b2", "b3"]) == ({"b3"}, set())

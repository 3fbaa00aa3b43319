"""Scoped sync at the storage and engine level (issue #17): what each user's devices see and may write.

A server storage with scopes answers each request for one user (``scoped_to``); devices are
SqliteSyncStorage clients syncing through the real JSON round trip. The server's storage is the one
its config opens on ``server_database`` (SQLite only for now: see ``pytestmark``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from client_sdk import DatabaseEngine, InProcessTransport, SqliteSyncStorage, SyncManifest
from client_sdk.errors import InvalidParameterError
from server_stub import ServerConfig
from server_stub.backend import ServerBackend
from tests.reliability.inflight import HookedTransport
from tests.serverdb import Database, server_query, server_storage

SCHEMA = """
CREATE TABLE todo_lists (id TEXT PRIMARY KEY, owner TEXT, name TEXT);
CREATE TABLE list_members (id TEXT PRIMARY KEY, list_id TEXT REFERENCES todo_lists (id), user_id TEXT);
CREATE TABLE tasks (id TEXT PRIMARY KEY, list_id TEXT REFERENCES todo_lists (id), title TEXT);
"""
MODELS = {"todo_lists": "todo.List", "list_members": "todo.Member", "tasks": "todo.Task"}
LISTS_SCOPE = "owner = :user OR id IN (SELECT list_id FROM list_members WHERE user_id = :user)"
SCOPES = {
    "todo_lists": LISTS_SCOPE,
    "tasks": f"list_id IN (SELECT id FROM todo_lists WHERE {LISTS_SCOPE})",
}


class AsUser:
    """A transport to the server engine that answers as ``user`` would be answered over HTTP."""

    def __init__(self, server: DatabaseEngine, storage: ServerBackend, user: str) -> None:
        self.inner = InProcessTransport(server)
        self.storage = storage
        self.user = user

    def exchange(self, manifest: SyncManifest) -> SyncManifest:
        with self.storage.scoped_to(self.user):
            return self.inner.exchange(manifest)


class World:
    """The server's storage on ``database`` (by default ``folder/server.db``) and devices on files in ``folder``."""

    def __init__(self, folder: Path, stack: ExitStack, database: Database | None = None) -> None:
        self.folder = folder
        self.database = database or folder / "server.db"
        self.stack = stack
        config = ServerConfig(database=self.database, models=MODELS, schema=SCHEMA, scopes=SCOPES, node_id="server")
        self.server_storage = stack.enter_context(server_storage(config))
        self.server = DatabaseEngine(self.server_storage, self.server_storage.dependency_graph(), self.server_storage.clock,
                                     "server", transaction=self.server_storage.transaction)

    def device(self, name: str, user: str) -> tuple[DatabaseEngine, sqlite3.Connection]:
        path = self.folder / f"{name}.db"
        with sqlite3.connect(path) as setup:
            setup.executescript(SCHEMA)
        storage = self.stack.enter_context(_closing(SqliteSyncStorage(path, MODELS, node_id=name)))
        engine = DatabaseEngine(storage, storage.dependency_graph(), storage.clock, name, transaction=storage.transaction,
                                transport=AsUser(self.server, self.server_storage, user))
        return engine, storage.connection


class _closing:
    def __init__(self, storage: SqliteSyncStorage) -> None:
        self.storage = storage

    def __enter__(self) -> SqliteSyncStorage:
        return self.storage

    def __exit__(self, *exc: Any) -> None:
        self.storage.close()


@pytest.fixture
def world(tmp_path: Path, server_database: Database) -> Iterator[World]:
    with ExitStack() as stack:
        yield World(tmp_path, stack, server_database)


def write(connection: sqlite3.Connection, sql: str) -> None:
    with connection:
        connection.execute(sql)


def ids(connection: sqlite3.Connection, table: str) -> list[str]:
    return [key for (key,) in connection.execute(f"SELECT id FROM {table} ORDER BY id")]


def server_ids(world: World, table: str) -> list[str]:
    return [key for (key,) in server_query(world.database, f"SELECT id FROM {table} ORDER BY id")]


def test_each_user_pulls_only_their_rows_and_a_share_brings_the_older_rows_in(world: World) -> None:
    alice, alice_db = world.device("alice-laptop", "alice")
    bob, bob_db = world.device("bob-laptop", "bob")
    write(alice_db, "INSERT INTO todo_lists VALUES ('A', 'alice', 'groceries')")
    write(alice_db, "INSERT INTO tasks VALUES ('a1', 'A', 'milk'), ('a2', 'A', 'eggs')")
    write(bob_db, "INSERT INTO todo_lists VALUES ('B', 'bob', 'tools')")
    write(bob_db, "INSERT INTO tasks VALUES ('b1', 'B', 'hammer')")
    assert alice.sync().ok and bob.sync().ok and alice.sync().ok
    assert ids(alice_db, "todo_lists") == ["A"] and ids(alice_db, "tasks") == ["a1", "a2"]
    assert ids(bob_db, "todo_lists") == ["B"] and ids(bob_db, "tasks") == ["b1"]
    # alice shares her list: bob gets it with its tasks, though their stamps are older than his checkpoint
    write(alice_db, "INSERT INTO list_members VALUES ('m1', 'A', 'bob')")
    alice.sync()
    bob.sync()
    assert ids(bob_db, "todo_lists") == ["A", "B"] and ids(bob_db, "tasks") == ["a1", "a2", "b1"]
    # unshared: bob's devices drop the rows, and nobody else hears of a delete
    write(alice_db, "DELETE FROM list_members WHERE id = 'm1'")
    alice.sync()
    result = bob.sync()
    assert result.ok and ids(bob_db, "todo_lists") == ["B"] and ids(bob_db, "tasks") == ["b1"]
    assert bob.storage.pending_count() == 0
    alice.sync()
    assert ids(alice_db, "todo_lists") == ["A"] and ids(alice_db, "tasks") == ["a1", "a2"]


def test_writes_outside_the_scope_are_refused_per_key_and_the_rest_applies(world: World) -> None:
    alice, alice_db = world.device("alice-laptop", "alice")
    bob, bob_db = world.device("bob-laptop", "bob")
    write(alice_db, "INSERT INTO todo_lists VALUES ('A', 'alice', 'groceries')")
    write(alice_db, "INSERT INTO tasks VALUES ('a1', 'A', 'milk')")
    alice.sync()
    # bob forges alice's rows: an update, a delete, an insert into her list, a list owned by her
    write(bob_db, "INSERT INTO todo_lists VALUES ('A', 'alice', 'hacked')")
    write(bob_db, "INSERT INTO todo_lists VALUES ('B', 'bob', 'mine'), ('B2', 'alice', 'gift')")
    write(bob_db, "INSERT INTO tasks VALUES ('x1', 'A', 'sneaky'), ('b1', 'B', 'mine'), ('orphan', NULL, 'no list')")
    result = bob.sync()
    refused = {error["key"]: error["message"] for error in result.errors}
    assert set(refused) == {"A", "x1", "B2", "orphan"}
    assert "not a row you may change" in refused["A"] and "once written" in refused["B2"]
    assert server_query(world.database, "SELECT name FROM todo_lists WHERE id = 'A'") == [("groceries",)]
    assert server_ids(world, "tasks") == ["a1", "b1"] and server_ids(world, "todo_lists") == ["A", "B"]
    # a client that moves its task into bob's list (its file does not know the list: foreign keys off)
    hostile = sqlite3.connect(world.folder / "alice-laptop.db")
    write(hostile, "UPDATE tasks SET list_id = 'B' WHERE id = 'a1'")
    hostile.close()
    moved = alice.sync()
    assert [error["key"] for error in moved.errors] == ["a1"]
    assert server_query(world.database, "SELECT list_id FROM tasks WHERE id = 'a1'") == [("A",)]


def test_a_condition_that_does_not_compile_names_its_table(tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    with sqlite3.connect(path) as setup:
        setup.executescript(SCHEMA)
    for scopes, message in (({"tasks": "nope = :user"}, "scopes.tasks: the condition does not compile on table 'tasks'"),
                            ({"tasks": "list_id = :owner"}, "scopes.tasks"),
                            ({"elsewhere": "1"}, "scopes.elsewhere: not a synced table")):
        with pytest.raises(InvalidParameterError, match=message):
            SqliteSyncStorage(path, MODELS, role="server", scopes=scopes)


@pytest.mark.parametrize("point", ["before_send", "after_answer"])
def test_writes_made_while_a_scoped_sync_runs_are_pushed_and_land_in_scope(world: World, point: str) -> None:
    alice, alice_db = world.device("alice-laptop", "alice")
    bob, bob_db = world.device("bob-laptop", "bob")
    write(alice_db, "INSERT INTO todo_lists VALUES ('A', 'alice', 'groceries')")
    write(alice_db, "INSERT INTO list_members VALUES ('m1', 'A', 'bob')")
    write(alice_db, "INSERT INTO tasks VALUES ('a1', 'A', 'milk')")
    alice.sync()
    bob.sync()  # bob has alice's shared list and its task
    write(bob_db, "INSERT INTO todo_lists VALUES ('B', 'bob', 'tools')")
    hooked = HookedTransport(bob.transport)
    bob.transport = hooked

    def second_writer() -> None:  # another connection to bob's file, mid-round
        other = sqlite3.connect(world.folder / "bob-laptop.db")
        write(other, "INSERT INTO tasks VALUES ('b1', 'B', 'hammer')")
        write(other, "UPDATE tasks SET title = 'oat milk' WHERE id = 'a1'")
        other.close()

    hooked.at_next_exchange(point, second_writer)
    assert bob.sync().ok and bob.sync().ok
    alice.sync()
    assert server_query(world.database, "SELECT id, title FROM tasks ORDER BY id") == [("a1", "oat milk"), ("b1", "hammer")]
    assert ids(alice_db, "tasks") == ["a1"] and alice_db.execute("SELECT title FROM tasks").fetchone() == ("oat milk",)
    assert ids(bob_db, "tasks") == ["a1", "b1"] and bob.storage.pending_count() == 0

"""The engine over SQLite storage end to end: plain SQL writes on two devices converge through a SQLite server."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from client_sdk.engine.engine import DatabaseEngine
from client_sdk.sqlite import SqliteSyncStorage
from client_sdk.transport.inprocess import InProcessTransport

from .conftest import MODELS, SCHEMA, connect


def make_storage(tmp_path: Path, name: str, role: str) -> SqliteSyncStorage:
    db = tmp_path / f"{name}.db"
    with sqlite3.connect(db) as setup:
        setup.executescript(SCHEMA)
    return SqliteSyncStorage(db, MODELS, role=role)


def engine(
    storage: SqliteSyncStorage, transport: InProcessTransport | None = None, batch_size: int | None = None
) -> DatabaseEngine:
    return DatabaseEngine(
        storage, storage.dependency_graph(), storage.clock, storage.node_id,
        batch_size=batch_size, lock=storage.lock(), transaction=storage.transaction, transport=transport,
    )


def rows(app: sqlite3.Connection) -> list[tuple]:
    return app.execute("SELECT 'list', id, name, NULL, NULL FROM lists UNION ALL "
                       "SELECT 'task', id, title, done, list_id FROM tasks ORDER BY 1, 2").fetchall()


def test_two_devices_converge_through_a_sqlite_server(tmp_path: Path) -> None:
    server = make_storage(tmp_path, "server", "server")
    transport = InProcessTransport(engine(server))
    a_store, b_store = make_storage(tmp_path, "a", "client"), make_storage(tmp_path, "b", "client")
    a, b = engine(a_store, transport), engine(b_store, transport)
    a_app, b_app = connect(tmp_path / "a.db"), connect(tmp_path / "b.db")

    a_app.execute("INSERT INTO lists VALUES ('L', 'home')")
    a_app.executemany("INSERT INTO tasks (id, title, list_id) VALUES (?, ?, 'L')", [(f"t{i}", f"task {i}") for i in range(5)])
    paged = engine(a_store, transport, batch_size=2)
    assert paged.sync().rounds == 3  # six rows pushed two at a time; an empty complete answer ends the sync
    engine(b_store, transport, batch_size=2).sync()
    assert rows(b_app) == rows(a_app) and len(rows(b_app)) == 6

    # different fields of one row on each side, a delete, a cascade
    a_app.execute("UPDATE tasks SET title = 'renamed on a' WHERE id = 't0'")
    b_app.execute("UPDATE tasks SET done = 1 WHERE id = 't0'")
    b_app.execute("DELETE FROM tasks WHERE id = 't1'")
    b_app.execute("INSERT INTO lists VALUES ('W', 'work')")
    b_app.execute("INSERT INTO tasks (id, title, list_id) VALUES ('w1', 'report', 'W')")
    for device in (a, b, a, b):
        result = device.sync()
        assert result.ok, result.errors
    assert rows(a_app) == rows(b_app)
    assert ("task", "t0", "renamed on a", 1, "L") in rows(a_app)
    assert all(row[1] != "t1" for row in rows(a_app))

    a_app.execute("DELETE FROM lists WHERE id = 'W'")  # cascades to w1
    a.sync()
    b.sync()
    assert rows(a_app) == rows(b_app) and all(row[1] not in ("W", "w1") for row in rows(b_app))
    assert a_store.pending_count() == b_store.pending_count() == 0
    quiet = a.sync()
    assert quiet.ok and not any(quiet.pushed.values())

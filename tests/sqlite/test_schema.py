"""Which tables can be tracked, and what tracking leaves in (and takes out of) the file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from client_sdk.errors import CircularDependencyError, InvalidParameterError, UnknownModelError
from client_sdk.protocol.wire import SyncRecord
from client_sdk.sqlite import SqliteSyncStorage

from .conftest import LIST, MODELS, TASK, connect


def open_with(tmp_path: Path, ddl: str, models: dict[str, str], identity_field: str = "id") -> SqliteSyncStorage:
    db = tmp_path / "schema.db"
    with sqlite3.connect(db) as setup:
        setup.executescript(ddl)
    return SqliteSyncStorage(db, models, identity_field=identity_field)


@pytest.mark.parametrize(
    ("ddl", "message"),
    [
        ("CREATE TABLE t (id TEXT, v TEXT)", "no PRIMARY KEY"),
        ("CREATE TABLE t (a TEXT, b TEXT, PRIMARY KEY (a, b))", "composite PRIMARY KEY"),
        ("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", "INTEGER PRIMARY KEY"),
        ("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)", "keys must be text"),
        ("CREATE TABLE t (id BLOB PRIMARY KEY, v TEXT)", "keys must be text"),
        ("CREATE TABLE t (uuid TEXT PRIMARY KEY, v TEXT)", "identity_field='uuid'"),
        ("CREATE TABLE t (id TEXT PRIMARY KEY, _sync_v TEXT)", "reserved prefix"),
        ("CREATE TABLE other (id TEXT PRIMARY KEY)", "does not exist"),
        ("CREATE TABLE base (id TEXT PRIMARY KEY); CREATE VIEW t AS SELECT * FROM base", "not an ordinary table"),
    ],
)
def test_untrackable_tables_are_refused_with_the_table_and_the_fix(tmp_path: Path, ddl: str, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message) as refused:
        open_with(tmp_path, ddl, {"t": "app.T"})
    assert "'t'" in str(refused.value)


def test_bad_arguments_are_refused(path: Path) -> None:
    for kwargs in ({"role": "peer"}, {"identity_field": ""}, {"node_id": ""}):
        with pytest.raises(InvalidParameterError):
            SqliteSyncStorage(path, MODELS, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="unique"):
        SqliteSyncStorage(path, {"lists": "x.Same", "tasks": "x.Same"})
    with pytest.raises(InvalidParameterError, match="tracks no tables"):
        SqliteSyncStorage(path, None)
    with pytest.raises(InvalidParameterError):
        SqliteSyncStorage(42, MODELS)  # type: ignore[arg-type]


def test_a_custom_identity_field_and_without_rowid_tables(tmp_path: Path) -> None:
    schema = "CREATE TABLE t (uuid TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID"
    storage = open_with(tmp_path, schema, {"t": "app.T"}, identity_field="uuid")
    storage.connection.execute("INSERT INTO t VALUES ('k', 'v')")
    storage.connection.commit()
    assert dict(storage.get_pending("app.T"))["k"].data == {"uuid": "k", "v": "v"}


def test_generated_columns_are_not_synced(tmp_path: Path) -> None:
    storage = open_with(
        tmp_path, "CREATE TABLE t (id TEXT PRIMARY KEY, a INTEGER, twice INTEGER AS (a * 2))", {"t": "app.T"}
    )
    assert storage.fields("app.T") == frozenset({"id", "a"})
    storage.upsert_many("app.T", {"k": SyncRecord("k", {"id": "k", "a": 2}, {"id": 1, "a": 1})})
    assert storage.connection.execute("SELECT twice FROM t").fetchone() == (4,)


def test_every_internal_object_uses_the_prefix(storage: SqliteSyncStorage) -> None:
    ours = storage.connection.execute("SELECT name FROM sqlite_master WHERE name NOT IN ('lists', 'tasks')").fetchall()
    assert ours and all(name.startswith(("_sync_", "sqlite_autoindex_")) for (name,) in ours)
    assert storage.connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_dependency_graph_follows_foreign_keys_between_tracked_tables(tmp_path: Path) -> None:
    storage = open_with(
        tmp_path,
        """CREATE TABLE a (id TEXT PRIMARY KEY, parent TEXT REFERENCES a(id));
        CREATE TABLE b (id TEXT PRIMARY KEY, a_id TEXT REFERENCES a(id), ext TEXT REFERENCES untracked(id));
        CREATE TABLE c (id TEXT PRIMARY KEY, b_id TEXT REFERENCES b(id));
        CREATE TABLE untracked (id TEXT PRIMARY KEY);""",
        {"c": "x.C", "b": "x.B", "a": "x.A"},
    )
    graph = storage.dependency_graph()
    assert graph.sync_order() == ["x.A", "x.B", "x.C"]
    assert graph.edges["x.A"] == frozenset()  # a self-reference is not a dependency


def test_a_foreign_key_cycle_is_reported(tmp_path: Path) -> None:
    storage = open_with(
        tmp_path,
        """CREATE TABLE a (id TEXT PRIMARY KEY, b_id TEXT REFERENCES b(id));
        CREATE TABLE b (id TEXT PRIMARY KEY, a_id TEXT REFERENCES a(id));""",
        {"a": "x.A", "b": "x.B"},
    )
    with pytest.raises(CircularDependencyError):
        storage.dependency_graph()


def test_rows_present_before_tracking_are_pending_inserts(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as setup:
        setup.execute("CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT)")
        setup.executemany("INSERT INTO notes VALUES (?, ?)", [("a", "1"), ("b", "2")])
    storage = SqliteSyncStorage(db, {"notes": "app.Note"})
    records = dict(storage.get_pending("app.Note"))
    assert set(records) == {"a", "b"} and set(records["a"].timestamps) == {"id", "body"}
    assert SqliteSyncStorage(db, {"notes": "app.Note"}).pending_count() == 2  # reopening adds nothing


def test_add_column_reinstalls_triggers_and_keeps_stamps(path: Path) -> None:
    storage = SqliteSyncStorage(path, MODELS)
    app = connect(path)
    app.execute("INSERT INTO tasks (id, title) VALUES ('t1', 'milk')")
    before = dict(storage.get_pending(TASK))["t1"].timestamps
    storage.close()
    app.execute("ALTER TABLE tasks ADD COLUMN colour TEXT DEFAULT 'red'")
    app.execute("UPDATE tasks SET title = 'logged with the old triggers'")
    storage = SqliteSyncStorage(path, MODELS)
    assert "colour" in storage.fields(TASK)
    record = dict(storage.get_pending(TASK))["t1"]
    assert record.timestamps["colour"] == 0 and record.timestamps["id"] == before["id"]
    assert record.timestamps["title"] > before["title"]
    app.execute("UPDATE tasks SET colour = 'blue'")
    assert dict(storage.get_pending(TASK))["t1"].timestamps["colour"] > record.timestamps["title"]


def test_a_rebuilt_table_keeps_its_stamps_and_catches_up(path: Path) -> None:
    storage = SqliteSyncStorage(path, MODELS)
    app = connect(path)
    app.execute("INSERT INTO tasks (id, title) VALUES ('kept', 'a'), ('dropped', 'b')")
    before = dict(storage.get_pending(TASK))["kept"].timestamps
    storage.close()
    # the twelve-step ALTER TABLE: new table, copy, drop (and our triggers with it), rename
    app.execute("PRAGMA foreign_keys = OFF")
    app.executescript(
        """BEGIN;
        CREATE TABLE tasks_new (id TEXT PRIMARY KEY, title TEXT, done BOOLEAN NOT NULL DEFAULT 0,
                                list_id TEXT REFERENCES lists(id));
        INSERT INTO tasks_new (id, title, done, list_id) SELECT id, title, done, list_id FROM tasks;
        DROP TABLE tasks;
        ALTER TABLE tasks_new RENAME TO tasks;
        COMMIT;"""
    )
    app.execute("INSERT INTO tasks (id, title) VALUES ('while untracked', 'c')")
    app.execute("DELETE FROM tasks WHERE id = 'dropped'")
    storage = SqliteSyncStorage(path, MODELS)
    records = dict(storage.get_pending(TASK))
    assert records["kept"].timestamps == {name: stamp for name, stamp in before.items() if name != "priority"}
    assert set(records) == {"kept", "while untracked"}
    assert list(storage.get_pending_deletes(TASK)) == ["dropped"]
    app.execute("UPDATE tasks SET title = 'tracked again' WHERE id = 'kept'")
    assert dict(storage.get_pending(TASK))["kept"].timestamps["title"] > before["title"]


def test_untrack_removes_every_trigger_and_shadow_object(storage: SqliteSyncStorage, app: sqlite3.Connection) -> None:
    app.execute("INSERT INTO tasks (id, title) VALUES ('t1', 'milk')")
    storage.untrack("tasks")
    leftovers = storage.connection.execute(
        "SELECT name FROM sqlite_master WHERE name LIKE '%tasks%' AND name NOT LIKE 'sqlite_autoindex_tasks%' AND name != 'tasks'"
    ).fetchall()
    assert leftovers == []
    assert storage.connection.execute("SELECT count(*) FROM _sync_log").fetchone() == (0,)
    assert storage.labels == (LIST,)
    with pytest.raises(UnknownModelError):
        storage.get_pending(TASK)
    with pytest.raises(UnknownModelError):
        storage.untrack("tasks")
    app.execute("UPDATE tasks SET title = 'not captured'")
    assert storage.pending_count() == 0

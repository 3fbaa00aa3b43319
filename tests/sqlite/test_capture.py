"""Change capture: whatever SQL writes the tracked tables, from whatever connection, is stamped correctly."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.protocol.hlc import wall_of
from client_sdk.protocol.wire import SyncRecord
from client_sdk.sqlite import SqliteSyncStorage

from .conftest import LIST, TASK, connect

TASK_FIELDS = {"id", "title", "done", "priority", "list_id"}


def pending(storage: SqliteSyncStorage, label: str = TASK) -> dict[str, SyncRecord]:
    return dict(storage.get_pending(label))


def settle(storage: SqliteSyncStorage) -> None:
    """Acknowledge everything pending, as after a successful push."""
    for label in storage.labels:
        storage.acknowledge(
            label,
            {key: record.last_modified for key, record in storage.get_pending(label)},
            storage.get_pending_deletes(label),
        )
    assert storage.pending_count() == 0


def log_size(storage: SqliteSyncStorage) -> int:
    return storage.connection.execute('SELECT count(*) FROM "_sync_log"').fetchone()[0]


def test_insert_stamps_every_field_with_one_stamp(storage: SqliteSyncStorage, app: sqlite3.Connection) -> None:
    app.execute("INSERT INTO tasks (id, title) VALUES ('t1', 'milk')")
    record = pending(storage)["t1"]
    assert set(record.timestamps) == TASK_FIELDS
    assert len(set(record.timestamps.values())) == 1
    assert record.data == {"id": "t1", "title": "milk", "done": False, "priority": None, "list_id": None}
    assert wall_of(record.last_modified) > 1_600_000_000_000


def test_update_stamps_only_the_fields_that_changed(storage: SqliteSyncStorage, app: sqlite3.Connection) -> None:
    app.execute("INSERT INTO tasks (id, title, priority) VALUES ('t1', 'milk', 1)")
    before = pending(storage)["t1"].timestamps
    app.execute("UPDATE tasks SET title = 'oat milk', priority = 1, done = 0 WHERE id = 't1'")
    after = pending(storage)["t1"].timestamps
    assert after["title"] > before["title"]
    assert {name: after[name] for name in TASK_FIELDS - {"title"}} == {name: before[name] for name in TASK_FIELDS - {"title"}}


def test_update_that_changes_nothing_stamps_nothing(storage: SqliteSyncStorage, app: sqlite3.Connection) -> None:
    app.execute("INSERT INTO tasks (id, title) VALUES ('t1', 'milk')")
    settle(storage)
    app.execute("UPDATE tasks SET title = 'milk', done = 0")
    assert log_size(storage) == 0
    assert storage.pending_count() == 0


def test_a_change_of_case_in_a_nocase_column_is_a_change(tmp_path: Path) -> None:
    db = tmp_path / "nocase.db"
    with sqlite3.connect(db) as setup:
        setup.execute("CREATE TABLE tags (id TEXT PRIMARY KEY, name TEXT COLLATE NOCASE)")
    storage = SqliteSyncStorage(db, {"tags": "app.Tag"})
    storage.connection.execute("INSERT INTO tags VALUES ('g1', 'urgent')")
    storage.connection.commit()
    settle(storage)
    storage.connection.execute("UPDATE tags SET name = 'URGENT'")
    storage.connection.commit()
    assert pending(storage, "app.Tag")["g1"].data["name"] == "URGENT"


def test_delete_drops_the_shadow_row_and_leaves_a_pending_tombstone(storage: SqliteSyncStorage, app: sqlite3.Connection) -> None:
    app.execute("INSERT INTO tasks (id, title) VALUES ('t1', 'milk')")
    inserted = pending(storage)["t1"].last_modified
    settle(storage)
    app.execute("DELETE FROM tasks WHERE id = 't1'")
    tombstones = storage.get_pending_deletes(TASK)
    assert list(tombstones) == ["t1"] and tombstones["t1"] > inserted
    assert storage.get_records(TASK, ["t1"]) == {}
    assert storage.connection.execute('SELECT count(*) FROM "_sync_shadow_tasks"').fetchone()[0] == 0


def test_reinsert_supersedes_the_tombstone(storage: SqliteSyncStorage, app: sqlite3.Connection) -> None:
    app.execute("INSERT INTO tasks (id, title) VALUES ('t1', 'milk')")
    app.execute("DELETE FROM tasks WHERE id = 't1'")
    deleted = storage.get_pending_deletes(TASK)["t1"]
    app.execute("INSERT INTO tasks (id, title) VALUES ('t1', 'bread')")
    assert storage.get_pending_deletes(TASK) == {}
    assert storage.get_deletes_since(TASK, 0) == {}
    record = pending(storage)["t1"]
    assert record.data["title"] == "bread"
    assert min(record.timestamps.values()) > deleted


def test_primary_key_change_is_a_delete_and_an_insert(storage: SqliteSyncStorage, app: sqlite3.Connection) -> None:
    app.execute("INSERT INTO tasks (id, title) VALUES ('old', 'milk')")
    settle(storage)
    app.execute("UPDATE tasks SET id = 'new' WHERE id = 'old'")
    assert list(storage.get_pending_deletes(TASK)) == ["old"]
    record = pending(storage)["new"]
    assert set(record.timestamps) == TASK_FIELDS and len(set(record.timestamps.values())) == 1
    assert record.data["title"] == "milk"


@pytest.mark.parametrize("recursive", [False, True])
def test_insert_or_replace_restamps_the_row_without_a_tombstone(path: Path, storage: SqliteSyncStorage, recursive: bool) -> None:
    app = connect(path)
    app.execute(f"PRAGMA recursive_triggers = {'ON' if recursive else 'OFF'}")
    app.execute("INSERT INTO tasks (id, title, priority) VALUES ('t1', 'milk', 3)")
    first = pending(storage)["t1"].last_modified
    settle(storage)
    app.execute("INSERT OR REPLACE INTO tasks (id, title) VALUES ('t1', 'bread')")
    record = pending(storage)["t1"]
    assert record.data["title"] == "bread" and record.data["priority"] is None
    assert set(record.timestamps) == TASK_FIELDS and min(record.timestamps.values()) > first
    assert storage.get_deletes_since(TASK, 0) == {}
    assert storage.connection.execute('SELECT count(*) FROM "_sync_shadow_tasks"').fetchone()[0] == 1


def test_upsert_stamps_like_an_insert_or_an_update(storage: SqliteSyncStorage, app: sqlite3.Connection) -> None:
    upsert = "INSERT INTO tasks (id, title) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET title = excluded.title"
    app.execute(upsert, ("t1", "milk"))
    inserted = pending(storage)["t1"].timestamps
    assert set(inserted) == TASK_FIELDS
    app.execute(upsert, ("t1", "bread"))
    updated = pending(storage)["t1"].timestamps
    assert updated["title"] > inserted["title"]
    assert all(updated[name] == inserted[name] for name in TASK_FIELDS - {"title"})


@pytest.mark.parametrize("recursive", [False, True])
def test_update_or_replace_onto_an_existing_key(path: Path, storage: SqliteSyncStorage, recursive: bool) -> None:
    app = connect(path)
    app.execute(f"PRAGMA recursive_triggers = {'ON' if recursive else 'OFF'}")
    app.execute("INSERT INTO tasks (id, title) VALUES ('a', 'from a'), ('b', 'from b')")
    settle(storage)
    app.execute("UPDATE OR REPLACE tasks SET id = 'b' WHERE id = 'a'")
    assert list(storage.get_pending_deletes(TASK)) == ["a"]
    assert pending(storage)["b"].data["title"] == "from a"
    assert set(pending(storage)) == {"b"}


@pytest.mark.parametrize("recursive", [False, True])
def test_replace_on_a_secondary_unique_constraint_tombstones_the_row_it_removes(tmp_path: Path, recursive: bool) -> None:
    db = tmp_path / "people.db"
    with sqlite3.connect(db) as setup:
        setup.execute("CREATE TABLE people (id TEXT PRIMARY KEY, email TEXT UNIQUE)")
    storage = SqliteSyncStorage(db, {"people": "app.Person"})
    app = connect(db)
    app.execute(f"PRAGMA recursive_triggers = {'ON' if recursive else 'OFF'}")
    app.execute("INSERT INTO people VALUES ('p1', 'ann@example.org')")
    settle(storage)
    app.execute("INSERT OR REPLACE INTO people VALUES ('p2', 'ann@example.org')")
    assert list(storage.get_pending_deletes("app.Person")) == ["p1"]
    assert set(pending(storage, "app.Person")) == {"p2"}


def test_multi_row_statements_give_each_row_its_own_increasing_stamp(storage: SqliteSyncStorage, app: sqlite3.Connection) -> None:
    app.execute("INSERT INTO tasks (id, title) VALUES ('a', '1'), ('b', '2'), ('c', '3')")
    inserted = pending(storage)
    assert inserted["a"].last_modified < inserted["b"].last_modified < inserted["c"].last_modified
    app.execute("UPDATE tasks SET done = 1 WHERE id IN ('a', 'c')")
    updated = pending(storage)
    assert updated["a"].timestamps["done"] < updated["c"].timestamps["done"]
    assert updated["b"].timestamps == inserted["b"].timestamps
    app.execute("DELETE FROM tasks WHERE id IN ('b', 'c')")
    assert set(storage.get_pending_deletes(TASK)) == {"b", "c"}
    assert set(pending(storage)) == {"a"}


def test_no_stamp_survives_a_rolled_back_savepoint_or_transaction(storage: SqliteSyncStorage, app: sqlite3.Connection) -> None:
    app.execute("BEGIN")
    app.execute("INSERT INTO tasks (id, title) VALUES ('kept', 'milk')")
    app.execute("SAVEPOINT inner")
    app.execute("INSERT INTO tasks (id, title) VALUES ('gone', 'bread')")
    app.execute("UPDATE tasks SET title = 'changed' WHERE id = 'kept'")
    app.execute("DELETE FROM tasks WHERE id = 'kept'")
    app.execute("ROLLBACK TO inner")
    app.execute("RELEASE inner")
    app.execute("COMMIT")
    app.execute("BEGIN")
    app.execute("INSERT INTO tasks (id, title) VALUES ('never', 'x')")
    app.execute("ROLLBACK")
    records = pending(storage)
    assert set(records) == {"kept"}
    assert records["kept"].data["title"] == "milk" and len(set(records["kept"].timestamps.values())) == 1
    assert storage.get_pending_deletes(TASK) == {}


def test_on_delete_cascade_leaves_tombstones_for_the_children(storage: SqliteSyncStorage, app: sqlite3.Connection) -> None:
    app.execute("INSERT INTO lists (id, name) VALUES ('L', 'home')")
    app.execute("INSERT INTO tasks (id, title, list_id) VALUES ('t1', 'a', 'L'), ('t2', 'b', 'L')")
    settle(storage)
    app.execute("DELETE FROM lists WHERE id = 'L'")
    assert set(storage.get_pending_deletes(LIST)) == {"L"}
    assert set(storage.get_pending_deletes(TASK)) == {"t1", "t2"}


def test_writes_through_sqlite_utils_are_captured(storage: SqliteSyncStorage) -> None:
    tasks = storage.db.table("tasks")
    tasks.insert_all([{"id": "u1", "title": "a"}, {"id": "u2", "title": "b"}])
    tasks.update("u1", {"priority": 5})
    tasks.delete("u2")
    assert pending(storage)["u1"].data["priority"] == 5
    assert set(storage.get_pending_deletes(TASK)) == {"u2"}


def test_writes_from_another_process_without_the_sdk_are_captured(path: Path, storage: SqliteSyncStorage) -> None:
    script = textwrap.dedent(
        """
        import sqlite3, sys
        db = sqlite3.connect(sys.argv[1], isolation_level=None)
        db.execute("INSERT INTO tasks (id, title) VALUES ('p1', 'from afar'), ('p2', 'doomed')")
        db.execute("UPDATE tasks SET priority = 9 WHERE id = 'p1'")
        db.execute("DELETE FROM tasks WHERE id = 'p2'")
        """
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=60)
    record = pending(storage)["p1"]
    assert record.data == {"id": "p1", "title": "from afar", "done": False, "priority": 9, "list_id": None}
    assert record.timestamps["priority"] > record.timestamps["title"]
    assert set(storage.get_pending_deletes(TASK)) == {"p2"}


def test_triggers_and_the_python_clock_share_one_monotonic_clock(storage: SqliteSyncStorage, app: sqlite3.Connection) -> None:
    future = (wall_of(storage.clock.now()) + 3_600_000) << 16  # as if a peer's clock ran an hour ahead
    storage.clock.receive(future)
    app.execute("INSERT INTO tasks (id, title) VALUES ('t1', 'milk')")
    app.execute("INSERT INTO tasks (id, title) VALUES ('t2', 'bread')")
    records = pending(storage)
    assert future < records["t1"].last_modified < records["t2"].last_modified
    assert storage.clock.now() > records["t2"].last_modified
    reopened = SqliteSyncStorage(storage.connection, {"tasks": TASK})
    assert reopened.clock.last >= records["t2"].last_modified


def test_sync_writes_are_not_captured(storage: SqliteSyncStorage, app: sqlite3.Connection) -> None:
    storage.upsert_many(TASK, {"r1": SyncRecord("r1", {"id": "r1", "title": "remote"}, {"id": 5, "title": 7})})
    storage.delete_many(TASK, {"r2": 9})
    assert log_size(storage) == 0
    assert storage.pending_count() == 0
    assert storage.get_records(TASK, ["r1"])["r1"].timestamps == {"id": 5, "title": 7}


def test_a_row_an_app_trigger_writes_while_sync_applies_is_a_local_change(
    storage: SqliteSyncStorage, app: sqlite3.Connection
) -> None:
    storage.upsert_many(TASK, {"r0": SyncRecord("r0", {"id": "r0", "title": "before the trigger"}, {"id": 5, "title": 5})})
    app.execute("CREATE TRIGGER spawn AFTER INSERT ON tasks WHEN NEW.title = 'spawn' BEGIN "
                "INSERT INTO tasks (id, title) VALUES (NEW.id || '-child', 'spawned'), ('0-' || NEW.id, 'spawned'); END")
    page = {key: SyncRecord(key, {"id": key, "title": "spawn"}, {"id": 5, "title": 7}) for key in ("r1", "r2")}
    storage.upsert_many(TASK, page, guard=False)
    assert set(pending(storage)) == {"r1-child", "0-r1", "r2-child", "0-r2"}  # keys after, before and between the page's


def test_a_row_a_temporary_trigger_of_the_sync_connection_writes_is_a_local_change(storage: SqliteSyncStorage) -> None:
    storage.upsert_many(TASK, {"r0": SyncRecord("r0", {"id": "r0", "title": "before the trigger"}, {"id": 5, "title": 5})})
    storage.connection.execute("CREATE TEMP TRIGGER echo AFTER UPDATE OF title ON tasks WHEN NEW.title = 'echo' "
                               "BEGIN INSERT INTO tasks (id, title) VALUES ('echoed', 'yes'); END")
    storage.upsert_many(TASK, {"r0": SyncRecord("r0", {"id": "r0", "title": "echo"}, {"id": 5, "title": 8})}, guard=False)
    assert set(pending(storage)) == {"echoed"}


def test_a_row_a_foreign_key_action_changes_while_sync_applies_is_a_local_change(tmp_path: Path) -> None:
    db = tmp_path / "tree.db"
    with sqlite3.connect(db) as setup:
        setup.execute("CREATE TABLE nodes (id TEXT PRIMARY KEY, code TEXT UNIQUE, "
                      "parent_code TEXT REFERENCES nodes (code) ON UPDATE CASCADE)")
    storage = SqliteSyncStorage(db, {"nodes": "app.Node"})
    stamps = dict.fromkeys(("id", "code", "parent_code"), 5)
    storage.upsert_many("app.Node", {"a": SyncRecord("a", {"id": "a", "code": "x", "parent_code": None}, stamps),
                                     "b": SyncRecord("b", {"id": "b", "code": "y", "parent_code": "x"}, stamps)})
    renamed = SyncRecord("a", {"id": "a", "code": "z", "parent_code": None}, dict.fromkeys(stamps, 9))
    storage.upsert_many("app.Node", {"a": renamed}, guard=False)
    changed = pending(storage, "app.Node")
    assert set(changed) == {"b"} and changed["b"].data["parent_code"] == "z"
    storage.close()


def test_a_table_wider_than_one_mask_word(tmp_path: Path) -> None:
    db = tmp_path / "wide.db"
    columns = ", ".join(f"c{i} INTEGER" for i in range(70))
    with sqlite3.connect(db) as setup:
        setup.execute(f"CREATE TABLE wide (id TEXT PRIMARY KEY, {columns})")
    storage = SqliteSyncStorage(db, {"wide": "app.Wide"})
    app = connect(db)
    app.execute("INSERT INTO wide (id) VALUES ('w')")
    inserted = pending(storage, "app.Wide")["w"].timestamps
    assert len(inserted) == 71 and len(set(inserted.values())) == 1
    app.execute("UPDATE wide SET c65 = 1, c3 = 2")
    updated = pending(storage, "app.Wide")["w"].timestamps
    assert {name for name in updated if updated[name] != inserted[name]} == {"c65", "c3"}


@settings(max_examples=40, deadline=None)
@given(walls=st.lists(st.integers(1_700_000_000_000, 1_700_000_000_050), min_size=1, max_size=12))
def test_fold_stamps_follow_the_hlc_now_rule_even_when_the_wall_clock_goes_back(
    tmp_path_factory: pytest.TempPathFactory, walls: list[int]
) -> None:
    """Log entries written at arbitrary wall times get ``max(wall << 16, previous + 1)``, from the persisted clock."""
    db = tmp_path_factory.mktemp("fold") / "fold.db"
    with sqlite3.connect(db) as setup:
        setup.execute("CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT)")
    storage = SqliteSyncStorage(db, {"notes": "app.Note"})
    keys = [f"n{i}" for i in range(len(walls))]
    storage.upsert_many("app.Note", {key: SyncRecord(key, {"id": key}, {"id": 1}) for key in keys})
    start = storage.clock.receive(1_700_000_000_020 << 16)
    table_id = storage.connection.execute("SELECT id FROM _sync_tables WHERE name = 'notes'").fetchone()[0]
    with storage.transaction():
        storage.connection.executemany(
            'INSERT INTO "_sync_log" ("tbl", "key", "mask", "at") VALUES (?, ?, -1, ?)',
            [(table_id, key, wall / 86_400_000 + 2_440_587.5) for key, wall in zip(keys, walls, strict=True)],
        )
    stamps = [record.last_modified for _, record in sorted(storage.get_pending("app.Note"), key=lambda item: int(item[0][1:]))]
    expected, last = [], start
    for wall in walls:
        last = max(wall << 16, last + 1)
        expected.append(last)
    assert stamps == expected
    assert storage.clock.last >= expected[-1]
    storage.close()

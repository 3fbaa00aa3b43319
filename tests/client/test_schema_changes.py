"""Rolling upgrades: devices on different schema versions keep syncing, and nothing goes missing.

Each test runs a real server_stub over HTTP and real device files; schema changes are made the
way apps make them: ALTER TABLE from another connection, sqlite-utils' ``alter=True``, a table
added to ``models``, a server restarted with a newer schema.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from client_sdk import HttpTransport, SyncClient, SyncRecord
from server_stub import ServerConfig
from tests.conftest import NOTE, NOTES, Server, create_file, rows, serve
from tests.reliability.inflight import POINTS, HookedTransport

from .conftest import run

V1 = "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT, pinned BOOLEAN);"
V2 = "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT, pinned BOOLEAN, tags TEXT);"
LABELS = "CREATE TABLE labels (id TEXT PRIMARY KEY, name TEXT);"
LABEL = "notes.Label"


def open_device(path: Path, url: str, schema: str = V1, models: dict[str, str] | None = None) -> SyncClient:
    """A device whose file has ``schema`` (created if the file is new), syncing ``models`` with the server."""
    if not path.exists():
        create_file(path, schema)
    return SyncClient(path, models=models or NOTES, node_id=path.stem, transport=HttpTransport(url, retries=0, timeout=10.0))


def write(client: SyncClient, sql: str, *params: Any) -> None:
    with client.connection:
        client.connection.execute(sql, params)


def alter(path: Path, sql: str) -> None:
    """A schema change made from another connection, as a migration tool or the sqlite3 shell makes it."""
    connection = sqlite3.connect(path)
    try:
        connection.execute(sql)
        connection.commit()
    finally:
        connection.close()


def test_an_older_device_applies_the_fields_it_has_and_keeps_the_others(tmp_path: Path, server: Server) -> None:
    url = server(schema=V2)
    with open_device(tmp_path / "v2.db", url, V2) as v2, open_device(tmp_path / "v1.db", url) as v1:
        write(v2, "INSERT INTO notes (id, body, tags) VALUES ('n1', 'hello', 'work')")
        v2.sync()
        pulled = v1.sync()
        assert pulled.ok and pulled.errors == [] and pulled.applied == {NOTE: ["n1"]}
        assert rows(tmp_path / "v1.db") == {"n1": ("hello", None)}
        # v1 edits the field it has; the one it lacks goes back with its stamp, untouched
        write(v1, "UPDATE notes SET body = 'edited on v1' WHERE id = 'n1'")
        assert v1.sync().ok
        v2.sync()
        assert rows(tmp_path / "v2.db") == {"n1": ("edited on v1", None, "work")}
        # both edit at once, each a field of its own: both edits survive, on every device
        write(v2, "UPDATE notes SET tags = 'home' WHERE id = 'n1'")
        write(v1, "UPDATE notes SET body = 'again on v1' WHERE id = 'n1'")
        v2.sync()
        assert v1.sync().ok
        v2.sync()
        assert rows(tmp_path / "v2.db") == {"n1": ("again on v1", None, "home")}
        assert v1.storage.get_records(NOTE, ["n1"])["n1"].data["tags"] == "home"


def test_upgrading_a_device_fills_the_new_column_from_what_it_kept_with_its_stamps(tmp_path: Path, server: Server) -> None:
    url = server(schema=V2)
    v1_path = tmp_path / "v1.db"
    with open_device(tmp_path / "v2.db", url, V2) as v2:
        write(v2, "INSERT INTO notes (id, body, tags) VALUES ('n1', 'hello', 'work'), ('n2', 'plain', NULL)")
        v2.sync()
        stamps = v2.storage.get_records(NOTE, ["n1"])["n1"].timestamps
        with open_device(v1_path, url) as v1:
            v1.sync()
        alter(v1_path, "ALTER TABLE notes ADD COLUMN tags TEXT")  # the app's v2 migration, while it is closed
        with open_device(v1_path, url) as v1:
            assert rows(v1_path) == {"n1": ("hello", None, "work"), "n2": ("plain", None, None)}
            assert v1.storage.get_records(NOTE, ["n1"])["n1"].timestamps == stamps
            assert v1.pending_count() == 0  # nothing to push: the values are the server's
            write(v2, "UPDATE notes SET tags = 'later' WHERE id = 'n1'")
            v2.sync()
            assert v1.sync().ok and rows(v1_path)["n1"] == ("hello", None, "later")


def test_a_column_added_while_the_app_runs_is_synced_from_the_next_sync(tmp_path: Path, server: Server) -> None:
    url = server(schema=V2)
    with open_device(tmp_path / "v1.db", url) as v1, open_device(tmp_path / "v2.db", url, V2) as v2:
        write(v1, "INSERT INTO notes (id, body) VALUES ('n1', 'old')")
        v1.sync()
        # sqlite-utils adds the column on the fly, through its own connection, while the client is open
        sqlite_utils.Database(tmp_path / "v1.db")["notes"].insert({"id": "n2", "body": "new", "tags": "fresh"}, alter=True)
        pushed = v1.sync()
        assert pushed.ok and pushed.pushed == {NOTE: ["n2"]}
        v2.sync()
        assert rows(tmp_path / "v2.db") == {"n1": ("old", None, None), "n2": ("new", None, "fresh")}
        write(v1, "UPDATE notes SET tags = 'edited' WHERE id = 'n1'")  # the new column is tracked now
        v1.sync()
        v2.sync()
        assert rows(tmp_path / "v2.db")["n1"] == ("old", None, "edited")


def test_a_table_a_device_starts_tracking_brings_the_rows_the_server_already_has(tmp_path: Path, server: Server) -> None:
    both = {**NOTES, "labels": LABEL}
    url = server(schema=V1 + LABELS, models=both)
    with open_device(tmp_path / "a.db", url, V1 + LABELS, both) as a:
        write(a, "INSERT INTO labels (id, name) VALUES ('l1', 'work'), ('l2', 'home')")
        write(a, "INSERT INTO notes (id, body) VALUES ('n1', 'x')")
        a.sync()
    b_path = tmp_path / "b.db"
    with open_device(b_path, url, V1 + LABELS) as b:  # tracks notes only, for now
        result = b.sync()
        assert result.ok and result.errors == [] and result.skipped == {LABEL: ["l1", "l2"]}
        assert rows(b_path, "labels") == {}
    with open_device(b_path, url, models=both) as b:
        assert b.sync().ok
        assert rows(b_path, "labels") == {"l1": ("work",), "l2": ("home",)}
        assert rows(b_path) == {"n1": ("x", None)}


def test_a_row_the_table_refuses_is_held_back_then_stored_once_the_row_in_its_way_is_gone(
    tmp_path: Path, server: Server
) -> None:
    url = server()
    strict = "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT UNIQUE, pinned BOOLEAN);"
    with open_device(tmp_path / "a.db", url) as a, open_device(tmp_path / "b.db", url, strict) as b:
        write(b, "INSERT INTO notes (id, body) VALUES ('mine', 'same')")
        write(a, "INSERT INTO notes (id, body) VALUES ('theirs', 'same'), ('other', 'fine')")
        a.sync()
        result = b.sync()
        assert result.ok and result.applied == {NOTE: ["other"]}
        assert [(row["key"], row["message"]) for row in result.held_back] == [
            ("theirs", "UNIQUE constraint failed: notes.body")]
        assert [tuple(row) for row in b.held_back()] == [("notes", "theirs", "UNIQUE constraint failed: notes.body")]
        assert b.last_sync is not None and b.last_sync.summary["held_back"] == 1
        status = run("-m", "client_sdk.cli", "status", "--db", str(tmp_path / "b.db")).stdout
        assert "held back:        1" in status and "notes theirs: UNIQUE constraint failed: notes.body" in status
        write(b, "DELETE FROM notes WHERE id = 'mine'")  # the row in the way goes
        assert b.sync().held_back == []
        assert rows(tmp_path / "b.db") == {"other": ("fine", None), "theirs": ("same", None)}
        a.sync()
        assert rows(tmp_path / "a.db") == rows(tmp_path / "b.db")


def test_a_field_the_server_lacks_stays_pending_until_the_server_has_it(tmp_path: Path) -> None:
    database = tmp_path / "server.db"
    older = ServerConfig(database=database, models=NOTES, schema=V1)
    newer = ServerConfig(database=database, models=NOTES, schema=V2)
    with serve(older) as url, open_device(tmp_path / "v2.db", url, V2) as v2:
        write(v2, "INSERT INTO notes (id, body, tags) VALUES ('n1', 'hello', 'work')")
        refused = v2.sync()
        assert [row["key"] for row in refused.errors] == ["n1"] and "unknown field" in refused.errors[0]["message"]
        assert refused.rounds <= 3 and v2.pending_count() == 1  # not lost, and not retried in a loop
    with serve(newer) as url, open_device(tmp_path / "v2.db", url) as v2:  # the server added the column on start
        assert v2.sync().pushed == {NOTE: ["n1"]} and v2.pending_count() == 0
        with open_device(tmp_path / "other.db", url, V2) as other:
            other.sync()
            assert rows(tmp_path / "other.db") == {"n1": ("hello", None, "work")}


def test_a_held_back_row_whose_parent_is_gone_stays_held_and_the_sync_goes_on(tmp_path: Path, server: Server) -> None:
    schema = ("CREATE TABLE lists (id TEXT PRIMARY KEY, name TEXT);"
              "CREATE TABLE tasks (id TEXT PRIMARY KEY, list_id TEXT REFERENCES lists (id), title TEXT);")
    models = {"lists": "todo.List", "tasks": "todo.Task"}
    url = server(schema=schema, models=models)
    with open_device(tmp_path / "a.db", url, schema, models) as a:
        write(a, "INSERT INTO lists (id, name) VALUES ('L', 'home'), ('M', 'work')")
        write(a, "INSERT INTO tasks (id, list_id, title) VALUES ('t', 'M', 'ok')")
        a.sync()
        stamps = a.storage.get_records("todo.Task", ["t"])["t"].timestamps
    with open_device(tmp_path / "b.db", url, schema, models) as b:
        b.sync()
        # a record held back by an earlier sync whose parent list is gone by now (never on the server)
        orphan = SyncRecord("o", {"id": "o", "list_id": "gone", "title": "x"}, stamps)
        b.storage.hold("todo.Task", {"o": (orphan, "CHECK constraint failed: short_title")})
        result = b.sync()
        assert result.ok and result.held_back == [
            {"model_label": "todo.Task", "key": "o", "message": "refers to todo.List 'gone', which this device does not have"}]
        assert rows(tmp_path / "b.db", "tasks") == {"t": ("M", "ok")}


def test_rows_an_earlier_sdk_version_skipped_are_fetched_again_once(tmp_path: Path, server: Server) -> None:
    url = server(schema=V2)
    path = tmp_path / "old.db"
    with open_device(tmp_path / "v2.db", url, V2) as v2:
        write(v2, "INSERT INTO notes (id, body, tags) VALUES ('n1', 'hello', 'work'), ('n2', 'b', NULL)")
        v2.sync()
    with open_device(path, url) as old:
        old.sync()
    # what the earlier version left: it refused n1 ('unknown field(s)'), recorded a sync with errors,
    # moved its checkpoint past n1, and had no table to keep fields in
    connection = sqlite3.connect(path)
    with connection:
        for statement in ("DELETE FROM notes WHERE id = 'n1'", "DELETE FROM _sync_log",
                          "DELETE FROM _sync_shadow_notes WHERE _sync_key = 'n1'",
                          "DROP TABLE _sync_kept_notes", "DROP TABLE _sync_held_notes",
                          "UPDATE _sync_runs SET ok = 0"):
            connection.execute(statement)
    connection.close()
    assert rows(path) == {"n2": ("b", None)}
    with open_device(path, url) as upgraded:
        assert upgraded.sync().ok
        assert rows(path) == {"n1": ("hello", None), "n2": ("b", None)}
        assert upgraded.storage.get_records(NOTE, ["n1"])["n1"].data["tags"] == "work"
        assert upgraded.sync().applied == {}  # once


@pytest.mark.parametrize("point", POINTS)
def test_a_column_added_while_a_sync_runs_loses_nothing(tmp_path: Path, server: Server, point: str) -> None:
    url = server(schema=V2)
    v1_path = tmp_path / "v1.db"
    with open_device(tmp_path / "v2.db", url, V2) as v2:
        write(v2, "INSERT INTO notes (id, body, tags) VALUES ('n1', 'one', 'work'), ('n2', 'two', 'home')")
        v2.sync()
        create_file(v1_path, V1)
        hooked = HookedTransport(HttpTransport(url, retries=0, timeout=10.0))
        with SyncClient(v1_path, models=NOTES, node_id="v1", transport=hooked) as v1:
            write(v1, "INSERT INTO notes (id, body) VALUES ('n0', 'mine')")

            def migrate_and_write() -> None:  # the app's migration and a write to the new column, mid-round
                connection = sqlite3.connect(v1_path)
                with connection:
                    connection.execute("ALTER TABLE notes ADD COLUMN tags TEXT")
                    connection.execute("INSERT INTO notes (id, body, tags) VALUES ('n3', 'three', 'new')")
                    connection.execute("UPDATE notes SET tags = 'mine too' WHERE id = 'n0'")
                connection.close()

            hooked.at_next_exchange(point, migrate_and_write)
            assert v1.sync().errors == []
            assert v1.sync().errors == []
            v2.sync()
            expected = {"n0": ("mine", None, "mine too"), "n1": ("one", None, "work"),
                        "n2": ("two", None, "home"), "n3": ("three", None, "new")}
            assert rows(v1_path) == rows(tmp_path / "v2.db") == expected
            assert v1.pending_count() == 0


def test_a_table_rebuilt_with_a_new_column_is_filled_from_what_was_kept(tmp_path: Path, server: Server) -> None:
    url = server(schema=V2)
    v1_path = tmp_path / "v1.db"
    with open_device(tmp_path / "v2.db", url, V2) as v2:
        write(v2, "INSERT INTO notes (id, body, tags) VALUES ('n1', 'hello', 'work')")
        v2.sync()
    with open_device(v1_path, url) as v1:
        v1.sync()
    connection = sqlite3.connect(v1_path)  # the twelve-step ALTER: a new table, the rows copied, renamed
    connection.executescript("""
        BEGIN;
        CREATE TABLE notes_new (id TEXT PRIMARY KEY, body TEXT NOT NULL, pinned BOOLEAN, tags TEXT);
        INSERT INTO notes_new (id, body, pinned) SELECT id, body, pinned FROM notes;
        DROP TABLE notes;
        ALTER TABLE notes_new RENAME TO notes;
        COMMIT;
    """)
    connection.close()
    with open_device(v1_path, url) as v1:
        assert rows(v1_path) == {"n1": ("hello", None, "work")} and v1.pending_count() == 0
        write(v1, "UPDATE notes SET tags = 'rebuilt' WHERE id = 'n1'")  # tracked again
        v1.sync()
    with open_device(tmp_path / "v2.db", url, V2) as v2:
        v2.sync()
        assert rows(tmp_path / "v2.db") == {"n1": ("hello", None, "rebuilt")}

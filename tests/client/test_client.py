"""``SyncClient``, the facade an app embeds: a real SQLite file, a real server_stub, real HTTP."""

from __future__ import annotations

import sqlite3
import sys
import uuid
from pathlib import Path

import pytest
import sqlite_utils

from client_sdk import (
    HttpTransport,
    InvalidParameterError,
    PendingChange,
    RetryExhaustedError,
    SqliteSyncStorage,
    SyncClient,
)
from client_sdk.protocol.hlc import system_ms, wall_of
from tests.conftest import NOTE, NOTES, Device, Server, create_file, rows
from tests.loopback import free_port
from tests.serverdb import Database, server_query, server_rows

from .conftest import run, wait_until

TRACKER_SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS issues (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects (id),
    title TEXT NOT NULL
);
"""
TRACKER = {"issues": "tracker.issues", "projects": "tracker.projects"}


def write(client: SyncClient, sql: str, *params: object) -> None:
    """One committed write through the app's own connection."""
    with client.connection:
        client.connection.execute(sql, params)


# -- opening a database --

def test_without_a_path_the_database_lives_in_the_user_data_folder_of_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    expected = tmp_path / "data" / "notes-app" / "notes-app.db"
    if not sys.platform.startswith("linux"):
        pytest.skip("XDG_DATA_HOME decides the user data folder on Linux only")
    expected.parent.mkdir(parents=True)
    create_file(expected)

    with SyncClient(models=["notes"], app_name="notes-app") as client:
        assert client.path == expected
        write(client, "INSERT INTO notes VALUES ('n1', 'milk', 0)")
        assert [change.key for change in client.pending_changes()] == ["n1"]


def test_models_map_tables_to_labels_or_list_tables_labelled_with_the_app_name(tmp_path: Path) -> None:
    create_file(tmp_path / "mapped.db")
    create_file(tmp_path / "listed.db")
    with SyncClient(tmp_path / "mapped.db", models={"notes": "notes.Note"}) as mapped:
        assert mapped.models == {"notes": "notes.Note"}
    with SyncClient(tmp_path / "listed.db", models=["notes"], app_name="jotter") as listed:
        assert listed.models == {"notes": "jotter.notes"}
    with pytest.raises(InvalidParameterError):
        SyncClient(tmp_path / "mapped.db", models="notes")


def test_a_listed_table_syncs_under_its_app_name_label(tmp_path: Path, server: Server, server_database: Database) -> None:
    url = server(models={"notes": "jotter.notes"})
    with SyncClient(create_file(tmp_path / "a.db"), models=["notes"], app_name="jotter", server_url=url) as client:
        write(client, "INSERT INTO notes VALUES ('n1', 'milk', 0)")
        assert client.sync().summary()["pushed"] == 1
    assert server_rows(server_database) == {"n1": ("milk", 0)}


def test_the_node_id_is_generated_once_and_kept_in_the_file(tmp_path: Path) -> None:
    path = create_file(tmp_path / "a.db")
    with SyncClient(path, models=NOTES) as first:
        node_id = first.node_id
    assert uuid.UUID(node_id)
    with SyncClient(path, models=NOTES) as again:
        assert again.node_id == node_id
    with SyncClient(path, models=NOTES, node_id=node_id) as same:
        assert same.node_id == node_id
    with pytest.raises(InvalidParameterError, match="belongs to node"):
        SyncClient(path, models=NOTES, node_id="someone-else")
    with SyncClient(create_file(tmp_path / "b.db"), models=NOTES, node_id="phone") as named:
        assert named.node_id == "phone"


def test_the_app_gets_plain_handles_on_its_data(tmp_path: Path) -> None:
    with SyncClient(create_file(tmp_path / "a.db"), models=NOTES) as client:
        assert isinstance(client.db, sqlite_utils.Database)
        assert isinstance(client.connection, sqlite3.Connection)
        assert isinstance(client.storage, SqliteSyncStorage)
        client.db["notes"].insert({"id": "n1", "body": "milk", "pinned": False})
        assert client.connection.execute("SELECT body FROM notes").fetchall() == [("milk",)]
        assert [change.key for change in client.pending_changes()] == ["n1"]


def test_contradictory_arguments_are_refused_before_the_file_is_touched(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    transport = HttpTransport("http://127.0.0.1:9/sync/")
    with pytest.raises(InvalidParameterError, match="either server_url or transport"):
        SyncClient(path, models=NOTES, server_url="http://127.0.0.1:9/sync/", transport=transport)
    with pytest.raises(InvalidParameterError, match="give them to the transport"):
        SyncClient(path, models=NOTES, transport=transport, auth_token="secret")
    with pytest.raises(InvalidParameterError, match="at least one table"):
        SyncClient(path, models=[])
    assert not path.exists()
    transport.close()


def test_a_child_table_syncs_after_its_parent_as_its_foreign_key_says(
    tmp_path: Path, server: Server, server_database: Database
) -> None:
    """One record per round: pushed child-first, the server (foreign_keys on) would refuse the issue."""
    url = server(schema=TRACKER_SCHEMA, models=TRACKER)
    path = create_file(tmp_path / "a.db", TRACKER_SCHEMA)
    with SyncClient(path, models=["issues", "projects"], app_name="tracker", server_url=url, batch_size=1) as client:
        assert client.engine.graph.sync_order() == ["tracker.projects", "tracker.issues"]
        write(client, "INSERT INTO projects VALUES ('p1', 'launch')")
        write(client, "INSERT INTO issues VALUES ('i1', 'p1', 'write the README')")
        result = client.sync()
    assert result.ok and result.summary()["pushed"] == 2
    assert server_query(server_database, "SELECT id FROM issues WHERE project_id NOT IN (SELECT id FROM projects)") == []
    assert server_query(server_database, "SELECT id, project_id FROM issues") == [("i1", "p1")]


# -- what gets synced --

def test_writes_from_another_connection_and_another_process_are_synced(
    server: Server, server_database: Database, device: Device
) -> None:
    client = device("laptop", server())
    write(client, "INSERT INTO notes VALUES ('n1', 'milk', 0)")
    other = sqlite3.connect(client.path)
    with other:
        other.execute("INSERT INTO notes VALUES ('n2', 'bread', 0)")
        other.execute("UPDATE notes SET pinned = 1 WHERE id = 'n1'")
    other.close()
    run("-c", "import sqlite3, sys\n"
              "db = sqlite3.connect(sys.argv[1])\n"
              "with db:\n"
              "    db.execute(\"INSERT INTO notes VALUES ('n3', 'eggs', 1)\")\n"
              "    db.execute(\"DELETE FROM notes WHERE id = 'n2'\")\n",
        str(client.path))

    assert {(change.key, change.kind) for change in client.pending_changes()} == {
        ("n1", "upsert"), ("n2", "delete"), ("n3", "upsert")}
    client.sync()
    assert server_rows(server_database) == {"n1": ("milk", 1), "n3": ("eggs", 1)}


def test_pending_changes_are_the_unacknowledged_local_changes_oldest_first(server: Server, device: Device) -> None:
    client = device("laptop", server())
    assert client.pending_changes() == []
    write(client, "INSERT INTO notes VALUES ('n1', 'milk', 0)")
    write(client, "INSERT INTO notes VALUES ('n2', 'bread', 0)")
    client.sync()
    write(client, "UPDATE notes SET body = 'oat milk' WHERE id = 'n1'")
    write(client, "DELETE FROM notes WHERE id = 'n2'")

    pending = client.pending_changes()
    assert [(change.table, change.key, change.kind) for change in pending] == [
        ("notes", "n1", "upsert"), ("notes", "n2", "delete")]
    assert all(isinstance(change, PendingChange) for change in pending)
    assert pending[0].last_modified < pending[1].last_modified
    assert client.pending_count() == 2

    client.sync()
    assert client.pending_changes() == []


def test_last_sync_records_successes_and_failures(tmp_path: Path, server: Server) -> None:
    url = server()
    down = f"http://127.0.0.1:{free_port()}/sync/"
    path = create_file(tmp_path / "a.db")
    with SyncClient(path, models=NOTES, transport=HttpTransport(url, retries=0)) as client:
        assert client.last_sync is None
        write(client, "INSERT INTO notes VALUES ('n1', 'milk', 0)")
        client.sync()
        done = client.last_sync
        assert done is not None and done.ok and done.error is None and done.summary["pushed"] == 1
    with SyncClient(path, models=NOTES, transport=HttpTransport(down, retries=1, retry_delay=0.01)) as client:
        write(client, "INSERT INTO notes VALUES ('n2', 'bread', 0)")
        with pytest.raises(RetryExhaustedError):
            client.sync()
        failed = client.last_sync
        assert failed is not None and not failed.ok and failed.at >= done.at
        assert failed.error is not None and failed.error.startswith("RetryExhaustedError")
        assert [change.key for change in client.pending_changes()] == ["n2"]  # nothing lost, still pending


def test_a_sync_refuses_to_run_inside_an_uncommitted_transaction(server: Server, device: Device) -> None:
    client = device("laptop", server())
    client.connection.execute("INSERT INTO notes VALUES ('n1', 'milk', 0)")
    with pytest.raises(InvalidParameterError, match="commit"):
        client.sync()
    client.connection.commit()
    assert client.sync().summary()["pushed"] == 1


# -- conflicts --

def test_the_later_edit_of_a_field_wins_and_the_earlier_device_logs_the_conflict(
    server: Server, device: Device
) -> None:
    url = server()
    laptop, phone = device("laptop", url), device("phone", url)
    write(laptop, "INSERT INTO notes VALUES ('n1', 'milk', 0)")
    laptop.sync()
    phone.sync()

    write(laptop, "UPDATE notes SET body = 'oat milk' WHERE id = 'n1'")  # offline, first
    laptop_stamp = laptop.pending_changes()[0].last_modified
    wait_until(lambda: system_ms() > wall_of(laptop_stamp), what="the wall clock to pass the laptop's edit")
    write(phone, "UPDATE notes SET body = 'soy milk' WHERE id = 'n1'")  # offline, later
    phone.sync()
    laptop.sync()
    phone.sync()

    assert rows(laptop.path) == rows(phone.path) == {"n1": ("soy milk", 0)}
    [entry] = laptop.conflicts()
    assert (entry.model_label, entry.key, entry.conflict_type, entry.winner) == (NOTE, "n1", "both_modified", "remote")
    assert entry.fields == {"body": {"local": "oat milk", "remote": "soy milk", "winner": "remote"}}
    assert phone.conflicts() == []


def test_edits_of_different_fields_merge_without_a_conflict(server: Server, device: Device) -> None:
    url = server()
    laptop, phone = device("laptop", url), device("phone", url)
    write(laptop, "INSERT INTO notes VALUES ('n1', 'milk', 0)")
    laptop.sync()
    phone.sync()
    write(laptop, "UPDATE notes SET body = 'oat milk' WHERE id = 'n1'")
    write(phone, "UPDATE notes SET pinned = 1 WHERE id = 'n1'")
    phone.sync()
    laptop.sync()
    phone.sync()
    assert rows(laptop.path) == rows(phone.path) == {"n1": ("oat milk", 1)}
    assert laptop.conflicts() == phone.conflicts() == []


# -- dry run --

def test_a_dry_run_reports_what_would_move_and_changes_nothing(server: Server, server_database: Database, device: Device) -> None:
    url = server()
    laptop, phone = device("laptop", url), device("phone", url)
    write(phone, "INSERT INTO notes VALUES ('from-phone', 'bread', 0)")
    phone.sync()
    write(laptop, "INSERT INTO notes VALUES ('from-laptop', 'milk', 0)")

    def state() -> tuple[object, ...]:
        return rows(laptop.path), laptop.pending_changes(), laptop.storage.get_checkpoint(), server_rows(server_database)

    before = state()
    result = laptop.sync(dry_run=True)

    assert result.dry_run
    assert result.pushed == {NOTE: ["from-laptop"]}
    assert result.created == {NOTE: ["from-phone"]}
    assert state() == before
    assert laptop.last_sync is None


# -- lifetime --

def test_closing_releases_the_file_and_stops_auto_sync(tmp_path: Path, server: Server) -> None:
    path = create_file(tmp_path / "a.db")
    with SyncClient(path, models=NOTES, server_url=server()) as client:
        write(client, "INSERT INTO notes VALUES ('n1', 'milk', 0)")
        auto = client.start_auto_sync(interval=3600, poll=0.01)
        wait_until(lambda: client.pending_count() == 0, what="the auto sync")
    assert not auto.running
    with pytest.raises(sqlite3.ProgrammingError):
        client.connection.execute("SELECT 1")
    assert not Path(f"{path}-wal").exists()  # the last connection closed cleanly

    path.unlink()
    create_file(path)
    with SyncClient(path, models=NOTES) as fresh:
        assert fresh.pending_changes() == []



def test_acknowledged_tombstones_are_purged_after_sync(server: Server, device: Device) -> None:
    """A client keeps a tombstone only until the server has it."""
    client = device("laptop", server())
    write(client, "INSERT INTO notes VALUES ('n1', 'milk', 0)")
    client.sync()
    write(client, "DELETE FROM notes WHERE id = 'n1'")
    assert list(client.storage.get_tombstones(NOTE, ["n1"])) == ["n1"]
    client.sync()
    assert client.storage.get_tombstones(NOTE, ["n1"]) == {}
    assert client.pending_changes() == []


def test_a_row_written_without_its_key_is_refused_in_the_apps_terms(tmp_path: Path) -> None:
    """Any connection: the error names the app's table and key column, not sync's change log."""
    path = create_file(tmp_path / "a.db")
    with SyncClient(path, models=NOTES, node_id="a"):
        pass
    other = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match=r"^notes\.id may not be NULL: a synced row needs its key$"):
        other.execute("INSERT INTO notes (body) VALUES ('no key')")
    other.execute("INSERT INTO notes (id, body) VALUES ('k', 'fine')")
    with pytest.raises(sqlite3.IntegrityError, match=r"^notes\.id may not be NULL"):
        other.execute("UPDATE notes SET id = NULL WHERE id = 'k'")
    other.commit()
    assert other.execute("SELECT id, body FROM notes").fetchall() == [("k", "fine")]
    other.close()

"""server_stub on PostgreSQL: what the config may name, what is refused at start-up, and values of every supported type."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from client_sdk import HttpTransport, SyncClient
from client_sdk.errors import InvalidParameterError, StorageError
from client_sdk.protocol.hlc import next_stamp, system_ms
from client_sdk.protocol.wire import ModelPayload, SyncManifest, SyncRecord
from server_stub import ServerConfig, create_app
from server_stub.config import load_config
from server_stub.service import SyncService
from tests.loopback import serve

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[postgres]')")

ROOT = Path(__file__).resolve().parents[2]


def config(url: str, schema: str, models: dict[str, str], **options: object) -> ServerConfig:
    return ServerConfig(database=url, models=models, schema=schema, node_id="server", **options)  # type: ignore[arg-type]


def opened(config: ServerConfig) -> None:
    SyncService(config).close()


def test_a_postgresql_url_in_the_toml_is_kept_as_a_url_and_a_path_stays_a_file(tmp_path: Path) -> None:
    head = '[models]\nnotes = "notes.Note"\n'
    (tmp_path / "pg.toml").write_text('database = "postgresql://sync@db.internal:5432/notes"\n' + head)
    (tmp_path / "file.toml").write_text('database = "notes.db"\n' + head)
    assert load_config(tmp_path / "pg.toml").database == "postgresql://sync@db.internal:5432/notes"
    assert load_config(tmp_path / "file.toml").database == tmp_path / "notes.db"


def test_an_unreachable_database_is_a_start_up_error_without_the_password() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://sync:hunter2@127.0.0.1:{port}/notes"
    with pytest.raises(InvalidParameterError, match=r"cannot connect") as raised:
        opened(config(url, "", {"notes": "notes.Note"}))
    assert "hunter2" not in str(raised.value) and "sync:***@" in str(raised.value)


def test_the_command_says_how_to_install_the_driver_when_psycopg_is_missing(tmp_path: Path) -> None:
    (tmp_path / "server.toml").write_text('database = "postgresql://sync@127.0.0.1:1/notes"\n[models]\nnotes = "notes.Note"\n')
    blocker = tmp_path / "no_psycopg"
    blocker.mkdir()
    (blocker / "psycopg.py").write_text("raise ImportError('psycopg is not installed here')\n")
    run = subprocess.run([sys.executable, "-m", "server_stub", "--config", str(tmp_path / "server.toml")],
                         cwd=ROOT, env={"PYTHONPATH": f"{blocker}:{ROOT}", "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "needs the psycopg driver: pip install 'offline-sync-sdk[postgres]'" in run.stderr


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("CREATE TABLE notes (id TEXT PRIMARY KEY, at TIMESTAMP)",
         r"column type\(s\) sync cannot carry on PostgreSQL: at \(timestamp"),
        ("CREATE TABLE notes (id TEXT, n INTEGER, PRIMARY KEY (id, n))", r"primary key must be the one column 'id'"),
        ("CREATE TABLE notes (id BYTEA PRIMARY KEY)", r"column type\(s\) sync cannot carry"),
        ("CREATE TABLE notes (id TEXT PRIMARY KEY, value REAL)", r"value \(real\).*real is a 4-byte float.*use double precision"),
        ("CREATE TABLE notes (id BIGINT PRIMARY KEY)", r"key column 'id' must be TEXT \(or VARCHAR\), not bigint"),
        ("CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT,)", r"schema: PostgreSQL refused"),
    ],
)
def test_a_table_sync_cannot_carry_is_refused_at_start_naming_it(postgres_url: str, schema: str, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        opened(config(postgres_url, schema, {"notes": "notes.Note"}))


def test_an_on_delete_action_between_synced_tables_is_refused_naming_the_constraint(postgres_url: str) -> None:
    schema = ("CREATE TABLE lists (id TEXT PRIMARY KEY);"
              "CREATE TABLE tasks (id TEXT PRIMARY KEY, list_id TEXT CONSTRAINT task_list REFERENCES lists ON DELETE CASCADE);")
    with pytest.raises(InvalidParameterError, match=r"foreign key 'task_list' has an ON DELETE action"):
        opened(config(postgres_url, schema, {"lists": "todo.List", "tasks": "todo.Task"}))


def test_a_database_with_some_of_the_tables_is_refused_and_left_alone(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("CREATE TABLE lists (id TEXT PRIMARY KEY)")
    schema = "CREATE TABLE lists (id TEXT PRIMARY KEY); CREATE TABLE tasks (id TEXT PRIMARY KEY);"
    with pytest.raises(InvalidParameterError, match=r"lacks table\(s\) tasks but has the other synced tables"):
        opened(config(postgres_url, schema, {"lists": "todo.List", "tasks": "todo.Task"}))
    with psycopg.connect(postgres_url) as connection:
        tables = {name for (name,) in connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"lists"}


def test_reopening_keeps_the_node_id_and_refuses_another(postgres_url: str) -> None:
    schema = "CREATE TABLE notes (id TEXT PRIMARY KEY)"
    opened(config(postgres_url, schema, {"notes": "notes.Note"}))
    opened(config(postgres_url, schema, {"notes": "notes.Note"}))
    with pytest.raises(InvalidParameterError, match="belongs to node 'server', not 'other'"):
        opened(ServerConfig(database=postgres_url, models={"notes": "notes.Note"}, node_id="other"))


VALUES_SCHEMA = """
CREATE TABLE items (
    id TEXT PRIMARY KEY, label VARCHAR(40), count INTEGER, small SMALLINT, ratio DOUBLE PRECISION,
    price NUMERIC, flag BOOLEAN, extra JSONB, raw JSON
);
"""


@pytest.fixture
def items_server(postgres_url: str) -> Iterator[str]:
    with serve(create_app(config(postgres_url, VALUES_SCHEMA, {"items": "shop.Item"}))) as url:
        yield url + "/sync/"


def device_file(path: Path, rows: Sequence[tuple[object, ...]] = ()) -> Path:
    """A device's SQLite file with the items table, holding ``rows``."""
    columns = ("id TEXT PRIMARY KEY, label TEXT, count INTEGER, small INTEGER, ratio REAL, price NUMERIC, "
               "flag BOOLEAN, extra JSON, raw JSON")
    with sqlite3.connect(path) as connection:
        connection.execute(f"CREATE TABLE items ({columns})")
        connection.executemany(f"INSERT INTO items VALUES ({', '.join('?' * 9)})", rows)
    connection.close()
    return path


def synced(path: Path, url: str) -> list[dict[str, str]]:
    with SyncClient(path, models={"items": "shop.Item"}, node_id=path.stem, transport=HttpTransport(url)) as device:
        return list(device.sync().errors)


def items(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as connection:
        found = connection.execute("SELECT * FROM items ORDER BY id").fetchall()
    connection.close()
    return found


def test_values_of_every_supported_type_travel_between_devices_unchanged(items_server: str, tmp_path: Path) -> None:
    rows: list[tuple[object, ...]] = [
        ("1", "milk", 3, -2, 0.5, 12.25, True, '{"tags": ["x", "y"], "n": 1, "two": 2.0, "big": 1e20}', "[1, 2.0]"),
        ("k2", "big key", 2**31 - 1, 2**15 - 1, -1e300, 7, False, '"text"', "null"),
        ("k3", None, None, None, None, None, None, None, None),
    ]
    sender, receiver = device_file(tmp_path / "a.db", rows), device_file(tmp_path / "b.db")
    assert synced(sender, items_server) == [] and synced(receiver, items_server) == []
    assert as_values(items(receiver)) == as_values(items(sender)) == as_values(rows)


def as_values(rows: Sequence[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """Rows with their JSON columns in one spelling (a device stores received JSON in its own), floats kept floats
    (JSON's null and SQL's NULL are one value on the wire)."""
    return [(*row[:7], *(json.dumps(None if text is None else json.loads(str(text)), sort_keys=True) for text in row[7:]))
            for row in rows]


def test_a_value_its_column_cannot_take_is_refused_for_that_key_only(items_server: str, tmp_path: Path) -> None:
    path = device_file(tmp_path / "a.db", [("1", "fine", 1, 1, None, None, None, None, None),
                                           ("2", "too big", 1, 2**15, None, None, None, None, None),
                                           ("3", "many", "several", 1, None, None, None, None, None)])
    refused = {error["key"]: error["message"] for error in synced(path, items_server)}
    assert set(refused) == {"2", "3"}
    assert "small" in refused["2"] and "count" in refused["3"]


def test_a_server_whose_database_connection_was_cut_answers_the_next_request(postgres_url: str) -> None:
    service = SyncService(config(postgres_url, "CREATE TABLE notes (id TEXT PRIMARY KEY)", {"notes": "notes.Note"}))
    try:
        with psycopg.connect(postgres_url, autocommit=True) as admin:  # as a database restart would
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        with pytest.raises(StorageError):
            service.process(SyncManifest("device", 0).seal())  # the request in flight fails (the client retries)
        answer, _ = service.process(SyncManifest("device", 0).seal())
        assert answer.errors == []
    finally:
        service.close()


def test_a_key_or_value_holding_nul_is_refused_for_that_key_and_its_delete_changes_nothing(postgres_url: str) -> None:
    service = SyncService(config(postgres_url, "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT, extra JSONB)",
                                 {"notes": "notes.Note"}))
    try:
        stamp = next_stamp(0, system_ms())
        records = {key: SyncRecord(key, {"id": key, "body": body, "extra": extra}, {"body": stamp, "extra": stamp})
                   for key, body, extra in [("fine", "ok", None), ("k\x00", "ok", None), ("v", "a\x00b", None),
                                            ("j", "ok", {"x\x00": 1})]}
        answer, _ = service.process(SyncManifest("device", 0, payloads=[ModelPayload("notes.Note", records)]).seal())
        assert sorted(error["key"] for error in answer.errors) == ["j", "k\x00", "v"]
        assert all("NUL" in error["message"] for error in answer.errors)
        deleted, _ = service.process(SyncManifest("device", 0, payloads=[
            ModelPayload("notes.Note", deletes={"k\x00": next_stamp(stamp, system_ms())})]).seal())
        assert deleted.errors == []  # no row can have that key here: nothing to delete
        with psycopg.connect(postgres_url) as connection:
            assert connection.execute("SELECT id FROM notes").fetchall() == [("fine",)]
    finally:
        service.close()

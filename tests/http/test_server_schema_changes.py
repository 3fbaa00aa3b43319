"""server_stub started on an existing database whose config's schema changed since (issue #20).

Additive changes (a new table, a new nullable column or one with a constant DEFAULT) are applied
on start; anything else is refused with what to do, and the file stays as it was.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from client_sdk import HttpTransport, InvalidParameterError, SyncClient
from server_stub import ServerConfig, create_app
from server_stub.schema import MIGRATE
from tests.loopback import serve

NOTES = "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT);"
LABELS = "CREATE TABLE labels (id TEXT PRIMARY KEY, name TEXT);"
NOTES_V2 = "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT, tags TEXT);"
V1 = {"notes": "notes.Note"}
V2 = {"notes": "notes.Note", "labels": "notes.Label"}


def config(tmp_path: Path, schema: str, models: dict[str, str]) -> ServerConfig:
    return ServerConfig(database=tmp_path / "server.db", models=models, schema=schema, node_id="server")


@contextmanager
def server(tmp_path: Path, schema: str, models: dict[str, str], port: int = 0) -> Iterator[str]:
    """server_stub on ``tmp_path/server.db`` (its schema brought up to ``schema`` first); yields its sync URL."""
    with serve(create_app(config(tmp_path, schema, models)), port) as base:
        yield base + "/sync/"


def device(tmp_path: Path, name: str, url: str, schema: str, models: dict[str, str]) -> SyncClient:
    path = tmp_path / f"{name}.db"
    with closing(sqlite3.connect(path)) as setup:
        setup.executescript(schema)
    return SyncClient(path, models=models, node_id=name, transport=HttpTransport(url, retries=0))


def write(client: SyncClient, sql: str, *params: object) -> None:
    with client.connection:
        client.connection.execute(sql, params)


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute(sql).fetchall()


def schema_of(path: Path) -> list[tuple[object, ...]]:
    return query(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name")


def port_of(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


def start_logging(caplog: pytest.LogCaptureFixture, tmp_path: Path, schema: str, models: dict[str, str]) -> list[str]:
    """Start (and stop) the server on ``schema``; what it logged about the schema."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="server_stub"), server(tmp_path, schema, models):
        pass
    return [record.getMessage() for record in caplog.records if record.getMessage().startswith("schema:")]


def test_a_new_column_and_table_are_added_on_restart_and_then_sync(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with server(tmp_path, NOTES, V1) as url:
        old = device(tmp_path, "old", url, NOTES, V1)
        write(old, "INSERT INTO notes VALUES ('n1', 'milk'), ('n2', 'eggs')")
        assert old.sync().ok
        early = device(tmp_path, "early", url, NOTES_V2, V1)
        write(early, "INSERT INTO notes VALUES ('n3', 'bread', 'shopping')")
        refused = early.sync()
        assert [error["key"] for error in refused.errors] == ["n3"] and "unknown field(s)" in refused.errors[0]["message"]
    assert query(tmp_path / "server.db", "SELECT id FROM notes ORDER BY id") == [("n1",), ("n2",)]

    with caplog.at_level(logging.INFO, logger="server_stub"):
        app = create_app(config(tmp_path, NOTES_V2 + LABELS, V2))
    assert [record.getMessage() for record in caplog.records] == ["schema: added column notes.tags",
                                                                  "schema: created table labels"]
    with serve(app, port_of(url)) as base:
        url = base + "/sync/"
        assert query(tmp_path / "server.db", "SELECT * FROM notes ORDER BY id") == [("n1", "milk", None), ("n2", "eggs", None)]
        retried = early.sync()  # the refused change stayed pending
        assert retried.ok and retried.pushed == {"notes.Note": ["n3"]}
        a = device(tmp_path, "a", url, NOTES_V2 + LABELS, V2)
        write(a, "INSERT INTO notes VALUES ('n4', 'jam', 'shopping')")
        write(a, "INSERT INTO labels VALUES ('l1', 'shopping')")
        pushed = a.sync()
        assert pushed.ok and pushed.pushed == {"notes.Note": ["n4"], "notes.Label": ["l1"]}
        b = device(tmp_path, "b", url, NOTES_V2 + LABELS, V2)
        assert b.sync().ok
        assert b.connection.execute("SELECT * FROM notes ORDER BY id").fetchall() == [
            ("n1", "milk", None), ("n2", "eggs", None), ("n3", "bread", "shopping"), ("n4", "jam", "shopping")]
        assert b.connection.execute("SELECT * FROM labels").fetchall() == [("l1", "shopping")]
        for client in (old, early, a, b):
            client.close()


def test_a_column_with_a_constant_default_is_added_and_old_rows_read_it(tmp_path: Path) -> None:
    with server(tmp_path, NOTES, V1) as url:
        old = device(tmp_path, "old", url, NOTES, V1)
        write(old, "INSERT INTO notes VALUES ('n1', 'milk')")
        assert old.sync().ok
        old.close()
    with_status = """CREATE TABLE notes (
    id TEXT PRIMARY KEY,
    body TEXT,
    status TEXT NOT NULL DEFAULT 'none' -- for now
);"""
    with server(tmp_path, with_status, V1) as url:
        assert query(tmp_path / "server.db", "SELECT * FROM notes") == [("n1", "milk", "none")]
        fresh = device(tmp_path, "fresh", url, with_status, V1)
        assert fresh.sync().ok
        assert fresh.connection.execute("SELECT * FROM notes").fetchall() == [("n1", "milk", "none")]
        fresh.close()
    # the definition as written, less the comment after it (which would swallow the stored statement's ')')
    assert query(tmp_path / "server.db", "SELECT sql FROM sqlite_master WHERE name = 'notes'") == [
        ("CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT, status TEXT NOT NULL DEFAULT 'none')",)]


def test_restarting_on_the_same_schema_changes_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with server(tmp_path, NOTES, V1) as url:
        old = device(tmp_path, "old", url, NOTES, V1)
        write(old, "INSERT INTO notes VALUES ('n1', 'milk')")
        assert old.sync().ok
        old.close()
    v2 = NOTES_V2 + LABELS + "CREATE INDEX labels_by_name ON labels (name);"
    assert start_logging(caplog, tmp_path, v2, V2) == [
        "schema: added column notes.tags", "schema: created table labels", "schema: created index labels_by_name"]
    upgraded = schema_of(tmp_path / "server.db")
    assert start_logging(caplog, tmp_path, v2, V2) == []
    assert start_logging(caplog, tmp_path, v2.replace("TEXT", "text"), V2) == []  # the same types, in another case
    assert schema_of(tmp_path / "server.db") == upgraded
    assert query(tmp_path / "server.db", "SELECT * FROM notes") == [("n1", "milk", None)]


BOTH = NOTES + LABELS


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        pytest.param("CREATE TABLE notes (id TEXT PRIMARY KEY);" + LABELS,
                     f"schema: notes.body is in the database but not in the schema (removed or renamed): {MIGRATE}",
                     id="removed column"),
        pytest.param("CREATE TABLE notes (id TEXT PRIMARY KEY, text TEXT);" + LABELS,
                     f"schema: notes.body is in the database but not in the schema (removed or renamed): {MIGRATE}",
                     id="renamed column"),
        pytest.param("CREATE TABLE notes (id TEXT PRIMARY KEY, body INTEGER);" + LABELS,
                     f"schema: notes.body is TEXT in the database but INTEGER in the schema: {MIGRATE}",
                     id="changed type"),
        pytest.param("CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT NOT NULL DEFAULT '');" + LABELS,
                     f"schema: notes.body is TEXT in the database but TEXT NOT NULL DEFAULT '' in the schema: {MIGRATE}",
                     id="changed constraint"),
        pytest.param("CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT, tags TEXT NOT NULL);" + LABELS,
                     "schema: notes.tags is a new NOT NULL column without a DEFAULT, which the rows already stored "
                     "cannot have: add it as a nullable column or with a constant DEFAULT",
                     id="new NOT NULL without DEFAULT"),
        pytest.param("CREATE TABLE notes (id TEXT, body TEXT PRIMARY KEY);" + LABELS,
                     f"schema: notes: the PRIMARY KEY is (id) in the database but (body) in the schema: {MIGRATE}",
                     id="changed primary key"),
        pytest.param(NOTES,
                     "schema: table labels is in [models] and in the database, but the schema no longer creates it: "
                     "put its CREATE TABLE back in the schema, or take it out of [models]",
                     id="mapped table no longer created"),
        pytest.param("CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT, tags TEXT, created TEXT DEFAULT CURRENT_TIMESTAMP);"
                     + LABELS + "CREATE TABLE pins (id TEXT PRIMARY KEY);",
                     "schema: cannot add notes.created: SQLite refused 'ALTER TABLE \"notes\" ADD COLUMN created TEXT "
                     "DEFAULT CURRENT_TIMESTAMP': Cannot add a column with non-constant default; "
                     "add it as a nullable column or with a constant DEFAULT",
                     id="non-constant DEFAULT, after a column that could be added"),
    ],
)
def test_other_changes_are_refused_naming_the_column_and_what_to_do(tmp_path: Path, schema: str, message: str) -> None:
    with server(tmp_path, BOTH, V2) as url:
        old = device(tmp_path, "old", url, BOTH, V2)
        write(old, "INSERT INTO notes VALUES ('n1', 'milk')")
        assert old.sync().ok
        old.close()
    database = tmp_path / "server.db"
    before = database.read_bytes()
    with pytest.raises(InvalidParameterError) as refused:
        create_app(config(tmp_path, schema, V2))
    assert str(refused.value) == message
    assert database.read_bytes() == before
    assert sorted(path.name for path in tmp_path.glob("server.db*")) == ["server.db"]


def test_python_dash_m_server_stub_exits_with_the_refusal(tmp_path: Path) -> None:
    with server(tmp_path, NOTES, V1):
        pass
    (tmp_path / "server.toml").write_text('database = "server.db"\n'
                                          'schema = "CREATE TABLE notes (id TEXT PRIMARY KEY, body INTEGER);"\n'
                                          '[models]\nnotes = "notes.Note"\n')
    done = subprocess.run([sys.executable, "-m", "server_stub", "--config", str(tmp_path / "server.toml")],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=30)
    assert done.returncode == 2
    assert done.stderr == f"error: schema: notes.body is TEXT in the database but INTEGER in the schema: {MIGRATE}\n"

"""A row no node could store is quarantined: every other row is pushed, the bad one is reported
(in the result's errors, ``client.quarantined()`` and ``client-sdk status``) and stays pending
until the app fixes it; then the next sync pushes it (issue #14)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from client_sdk import SyncClient
from tests.client.conftest import run
from tests.conftest import Server, create_file
from tests.serverdb import Database, server_rows

SCHEMA = "CREATE TABLE IF NOT EXISTS readings (id TEXT PRIMARY KEY, label TEXT, value DOUBLE PRECISION, count INTEGER);"
MODELS = {"readings": "lab.Reading"}


def another_program(path: Path, *statements: str) -> None:
    """Writes as another program would: its own connection, any bytes it likes."""
    with closing(sqlite3.connect(path)) as connection, connection:
        for statement in statements:
            connection.execute(statement)


def test_bad_rows_wait_in_quarantine_and_go_once_fixed(tmp_path: Path, server: Server, server_database: Database) -> None:
    url = server(schema=SCHEMA, models=MODELS)
    path = create_file(tmp_path / "device.db", SCHEMA)
    with SyncClient(path, models=MODELS, node_id="device", server_url=url) as client:
        another_program(
            path,
            "INSERT INTO readings VALUES ('fine', 'ok', 1.5, 3)",
            "INSERT INTO readings VALUES ('infinite', 'ok', 9e999, 3)",  # SQLite keeps an infinity in REAL
            "INSERT INTO readings VALUES ('bytes', CAST(X'6869FF' AS TEXT), 2.0, 3)",  # not UTF-8
            "INSERT INTO readings VALUES ('word', 'ok', 2.0, 'many')",  # text SQLite cannot make an INTEGER
        )
        result = client.sync()
        assert not result.ok
        reported = {error["key"]: error["message"] for error in result.errors}
        assert set(reported) == {"infinite", "bytes", "word"}
        assert "non-finite" in reported["infinite"] and "'value'" in reported["infinite"]
        assert "'label'" in reported["bytes"] and "'count'" in reported["word"]
        assert set(server_rows(server_database, "readings")) == {"fine"}
        assert {row.key for row in client.quarantined()} == {"infinite", "bytes", "word"}
        assert {change.key for change in client.pending_changes()} == {"infinite", "bytes", "word"}

    status = run("-m", "client_sdk.cli", "status", "--db", str(path)).stdout
    assert "not pushed:       3" in status
    assert "readings infinite: " in status and "readings bytes: " in status and "readings word: " in status

    with SyncClient(path, models=MODELS, node_id="device", server_url=url) as client:
        another_program(
            path,
            "UPDATE readings SET value = 1e300 WHERE id = 'infinite'",
            "UPDATE readings SET label = 'hi' WHERE id = 'bytes'",
            "UPDATE readings SET count = 7 WHERE id = 'word'",
        )
        assert client.sync().ok
        assert client.quarantined() == [] and client.pending_changes() == []
    assert server_rows(server_database, "readings") == {
        "fine": ("ok", 1.5, 3), "infinite": ("ok", 1e300, 3), "bytes": ("hi", 2.0, 3), "word": ("ok", 2.0, 7),
    }

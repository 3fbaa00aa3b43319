"""A change that would leave a FOREIGN KEY dangling is refused per key; the rest of the round goes through."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from client_sdk import ConflictStateError, HttpTransport, SyncClient
from server_stub import ServerConfig, create_app
from tests.loopback import serve

SCHEMA = """
CREATE TABLE projects (id TEXT PRIMARY KEY, name TEXT);
CREATE TABLE issues (id TEXT PRIMARY KEY, project_id TEXT REFERENCES projects (id), title TEXT);
"""
MODELS = {"projects": "tracker.Project", "issues": "tracker.Issue"}


def device(folder: Path, name: str, url: str) -> SyncClient:
    path = folder / f"{name}.db"
    with closing(sqlite3.connect(path)) as setup:
        setup.executescript(SCHEMA)
    return SyncClient(path, models=MODELS, node_id=name, transport=HttpTransport(url, retries=0))


def test_a_child_of_a_deleted_parent_is_refused_per_key_and_the_rest_syncs(tmp_path: Path) -> None:
    config = ServerConfig(database=tmp_path / "server.db", models=MODELS, schema=SCHEMA, node_id="server")
    with serve(create_app(config)) as base:
        a, b = device(tmp_path, "a", base + "/sync/"), device(tmp_path, "b", base + "/sync/")
        with a.connection:
            a.connection.execute("INSERT INTO projects VALUES ('p1', 'doomed')")
        a.sync()
        b.sync()
        with a.connection:
            a.connection.execute("DELETE FROM projects WHERE id = 'p1'")
        a.sync()
        with b.connection:  # b is offline: it files an issue under p1 and starts another project
            b.connection.execute("INSERT INTO issues VALUES ('i1', 'p1', 'orphan to be')")
            b.connection.execute("INSERT INTO projects VALUES ('p2', 'unrelated')")
        with pytest.raises(ConflictStateError, match="tracker.Issue 'i1' refers to tracker.Project 'p1'"):
            b.sync()  # the server refused i1 alone and took p2; applying p1's delete here would orphan i1
        with closing(sqlite3.connect(tmp_path / "server.db")) as server:
            assert server.execute("SELECT id FROM projects").fetchall() == [("p2",)]
            assert server.execute("SELECT count(*) FROM issues").fetchone()[0] == 0
            assert server.execute("PRAGMA foreign_key_check").fetchall() == []
        assert b.connection.execute("SELECT count(*) FROM projects WHERE id = 'p1'").fetchone()[0] == 1  # untouched
        with b.connection:  # the user moves the issue to the surviving project: everything settles
            b.connection.execute("UPDATE issues SET project_id = 'p2' WHERE id = 'i1'")
        assert b.sync().ok
        a.sync()
        expected = [("i1", "p2", "orphan to be")]
        assert a.connection.execute("SELECT * FROM issues").fetchall() == expected
        assert b.connection.execute("SELECT * FROM issues").fetchall() == expected
        assert b.connection.execute("SELECT id FROM projects").fetchall() == [("p2",)]
        a.close()
        b.close()

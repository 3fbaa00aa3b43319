"""Fixtures for the SQLite storage tests: a real database file per test, and a second connection to write it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from client_sdk.sqlite import SqliteSyncStorage

LIST = "todo.List"
TASK = "todo.Task"
MODELS = {"lists": LIST, "tasks": TASK}

SCHEMA = """
CREATE TABLE lists (id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '');
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    title TEXT,
    done BOOLEAN NOT NULL DEFAULT 0,
    priority INTEGER,
    list_id TEXT REFERENCES lists(id) ON DELETE CASCADE
);
"""


def connect(path: Path) -> sqlite3.Connection:
    """An app's own connection: autocommit, foreign keys on, default recursive_triggers (off)."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


@pytest.fixture
def path(tmp_path: Path) -> Path:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as setup:
        setup.executescript(SCHEMA)
    return db


@pytest.fixture
def storage(path: Path) -> Iterator[SqliteSyncStorage]:
    store = SqliteSyncStorage(path, MODELS)
    yield store
    store.close()


@pytest.fixture
def server(path: Path) -> Iterator[SqliteSyncStorage]:
    store = SqliteSyncStorage(path, MODELS, role="server")
    yield store
    store.close()


@pytest.fixture
def app(path: Path, storage: SqliteSyncStorage) -> Iterator[sqlite3.Connection]:
    """A second connection writing the tracked tables (storage installed first)."""
    connection = connect(path)
    yield connection
    connection.close()

"""A database that cannot be written (read-only, full) gives a typed StorageError naming the file,
and nothing is lost: the data and the pending changes are as they were (issue #14)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from client_sdk import SqliteSyncStorage, StorageError, SyncError
from tests.conftest import NOTES, Device, Server, create_file, rows


def test_opening_a_read_only_database_names_the_file(tmp_path: Path) -> None:
    path = create_file(tmp_path / "notes.db")
    read_only = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(StorageError, match=r"notes\.db: attempt to write a readonly database") as caught:
        SqliteSyncStorage(read_only, NOTES)
    assert isinstance(caught.value, SyncError) and caught.value.path == str(path)
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    read_only.close()
    names = [name for (name,) in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")]
    assert names == ["notes", "sqlite_autoindex_notes_1"]


def test_a_full_disk_during_sync_loses_nothing(tmp_path: Path, server: Server, device: Device) -> None:
    url = server()
    phone = device("phone", url)
    with phone.connection:
        phone.connection.executemany("INSERT INTO notes VALUES (?, ?, 0)", [(f"p{n}", "x" * 2000) for n in range(200)])
    phone.sync()
    laptop = device("laptop", url)
    with laptop.connection:
        laptop.connection.execute("INSERT INTO notes VALUES ('mine', 'written offline', 1)")
    pages = laptop.connection.execute("PRAGMA page_count").fetchone()[0]
    laptop.connection.execute(f"PRAGMA max_page_count = {pages + 2}")  # SQLite's own "disk full", for real
    with pytest.raises(StorageError, match=r"laptop\.db: database or disk is full") as caught:
        laptop.sync()
    assert caught.value.path == str(laptop.path)
    assert rows(laptop.path) == {"mine": ("written offline", 1)}
    assert [change.key for change in laptop.pending_changes()] == ["mine"]
    assert laptop.last_sync is not None and not laptop.last_sync.ok

    laptop.connection.execute("PRAGMA max_page_count = 1073741823")
    assert laptop.sync().ok
    assert len(rows(laptop.path)) == 201 and laptop.pending_changes() == []

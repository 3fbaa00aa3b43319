"""Quiescence: syncs with nothing to move write nothing, on either side."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.reliability.world import SqliteDevice, running_server
from tests.serverdb import Database, server_snapshot

JOURNAL = "_sync_runs"
"""The client's record of when it last synced: the one thing an idle sync is meant to write."""


def dump(path: Path, skip: str | None = None) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        return [line for line in connection.iterdump() if skip is None or skip not in line]
    finally:
        connection.close()


def test_ten_idle_syncs_write_nothing(tmp_path: Path, server_database: Database) -> None:
    with running_server(server_database) as url:
        a, b = SqliteDevice(tmp_path, "device-a", url), SqliteDevice(tmp_path, "device-b", url)
        a.write("k1", {"title": "hello", "notes": 1})
        b.write("k2", {"title": "world"})
        for device in (a, b, a, b):
            device.sync()
        before = (server_snapshot(server_database), dump(a.path, JOURNAL), dump(b.path, JOURNAL))
        for _ in range(10):
            a.sync()
            b.sync()
        after = (server_snapshot(server_database), dump(a.path, JOURNAL), dump(b.path, JOURNAL))
        assert after == before
        assert a.client.last_sync is not None and a.client.last_sync.ok
        a.close()
        b.close()

"""A device whose file is rolled back to an older copy re-converges within two syncs, losing nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.reliability.world import ServerView, SqliteDevice, running_server
from tests.serverdb import Database


def backup(source: Path, target: Path) -> None:
    """A consistent copy with SQLite's online backup, as a backup tool would take it."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def test_a_restored_device_reconverges_without_loss_or_duplicates(tmp_path: Path, server_database: Database) -> None:
    with running_server(server_database) as url:
        laptop, phone = SqliteDevice(tmp_path, "laptop", url), SqliteDevice(tmp_path, "phone", url)
        laptop.write("a", {"title": "first"})
        laptop.write("b", {"title": "to be deleted"})
        laptop.write("pending-at-backup", {"title": "never synced before the backup"})
        laptop.sync()
        phone.sync()
        laptop.write("pending-at-backup", {"title": "edited, unsynced at backup time"})
        backup(laptop.path, tmp_path / "laptop.bak")

        laptop.write("c", {"title": "made after the backup, synced"})
        laptop.write("a", {"notes": "edited after the backup, synced"})
        laptop.sync()
        phone.write("d", {"title": "from the phone"})
        phone.delete("b")
        assert "b" not in phone.rows()
        phone.sync()
        laptop.close()

        backup(tmp_path / "laptop.bak", laptop.path)  # the disk is rolled back
        restored = SqliteDevice(tmp_path, "laptop", url)
        restored.sync()
        restored.sync()
        phone.sync()
        server = ServerView(server_database).rows()
        assert restored.rows() == phone.rows() == server
        assert server["a"]["notes"] == "edited after the backup, synced"
        assert server["c"]["title"] == "made after the backup, synced"
        assert server["pending-at-backup"]["title"] == "edited, unsynced at backup time"
        assert "b" not in server and server["d"]["title"] == "from the phone"
        restored.close()
        phone.close()

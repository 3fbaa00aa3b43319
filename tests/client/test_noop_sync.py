"""A sync with nothing to do writes nothing, on the device or on the server (issue #16).

Commits are counted the way SQLite exposes them to other connections: ``PRAGMA data_version``
on a second connection changes whenever another connection commits a change to the file; the
database and its WAL must also keep their size and modification time.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from client_sdk import HttpTransport, SyncClient, SyncManifest
from tests.conftest import NOTE, Device, Server


class FileWatch:
    """What another connection sees of a database file: its data version, and the files' sizes and times."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connection = sqlite3.connect(path)

    def state(self) -> tuple[object, ...]:
        version = self.connection.execute("PRAGMA data_version").fetchone()[0]
        files = [self.path, self.path.with_name(self.path.name + "-wal")]
        return version, [(file.stat().st_size, file.stat().st_mtime_ns) for file in files if file.exists()]

    def close(self) -> None:
        self.connection.close()


class Counting:
    """A transport that counts the requests it carries."""

    def __init__(self, inner: HttpTransport) -> None:
        self.inner = inner
        self.requests: list[SyncManifest] = []

    def exchange(self, manifest: SyncManifest) -> SyncManifest:
        self.requests.append(manifest)
        return self.inner.exchange(manifest)


def write(client: SyncClient, sql: str) -> None:
    with client.connection:
        client.connection.execute(sql)


@pytest.mark.sqlite_only("counts the server's commits with SQLite's data_version and its file's size and time")
def test_a_sync_with_nothing_to_do_commits_nothing_on_either_side(
    tmp_path: Path, server: Server, device: Device
) -> None:
    laptop = device("laptop", server())
    write(laptop, "INSERT INTO notes (id, body) VALUES ('a', 'x')")
    laptop.sync()
    laptop.sync()
    recorded = laptop.journal.last_sync()  # the first sync's: the second moved nothing
    watches = [FileWatch(tmp_path / "laptop.db"), FileWatch(tmp_path / "server.db")]
    try:
        before = [watch.state() for watch in watches]
        for _ in range(5):
            result = laptop.sync()
            assert result.ok and result.rounds == 1 and result.moved_nothing
        assert [watch.state() for watch in watches] == before
    finally:
        for watch in watches:
            watch.close()
    # not journaled (that would be a write), yet last_sync tells when it ran
    assert laptop.journal.last_sync() == recorded
    assert laptop.last_sync is not None and recorded is not None and laptop.last_sync.at > recorded.at


def test_a_pull_asked_before_the_lock_is_the_syncs_first_round(server: Server, device: Device) -> None:
    url = server()
    phone = device("phone", url)
    laptop = device("laptop")
    counting = Counting(HttpTransport(url, retries=0, timeout=10.0))
    laptop.transport = laptop.engine.transport = counting
    write(phone, "INSERT INTO notes (id, body) VALUES ('a', 'x')")
    phone.sync()
    result = laptop.sync()
    assert result.applied == {NOTE: ["a"]}
    # the pull asked before the lock is applied as round 1, and the next finds nothing more (3 requests before)
    assert [request.change_count for request in counting.requests] == [0, 0]
    assert laptop.journal.last_sync() is not None  # a sync that moved something is journaled

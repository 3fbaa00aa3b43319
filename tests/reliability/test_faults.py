"""Network faults on real HTTP: 30% of 1,000 rounds fail, and the swarm still converges."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from client_sdk import SyncError, SyncStatus
from tests.reliability.faults import FaultyTransport, converge_through_faults
from tests.reliability.swarm import Swarm
from tests.reliability.world import ServerView, SqliteDevice, running_server
from tests.serverdb import Database, server_query


class FlakyDevice(SqliteDevice):
    """Syncs through a network that drops, delays past the timeout, 5xx's, truncates or corrupts."""

    def __init__(self, folder: Path, name: str, url: str, rng: random.Random) -> None:
        super().__init__(folder, name, url, transport_wrapper=lambda inner: FaultyTransport(inner, rng))
        self.failed = 0

    def sync(self) -> None:
        try:
            super().sync()
        except SyncError:
            self.failed += 1  # an app would retry later; so does the swarm


@pytest.mark.sqlite_only("the devices' way through a faulty network is the subject; any server does")
def test_the_swarm_converges_through_a_30_percent_fault_rate(tmp_path: Path, server_database: Database) -> None:
    rng = random.Random(7)
    with running_server(server_database) as url:
        devices = [FlakyDevice(tmp_path, f"device-{i}", url, rng) for i in range(4)]
        swarm = Swarm(2025, devices, ServerView(server_database))  # type: ignore[arg-type]
        converge_through_faults(swarm, [device.transport for device in devices])
        for device in devices:
            lock = device.client.storage.lock()
            session = lock.acquire(device.name)  # no sync left its lock behind
            lock.release(session, SyncStatus.SUCCEEDED)
            keys = [row[0] for row in device.db.execute("SELECT id FROM items")]
            assert len(keys) == len(set(keys))
            device.close()
    assert server_query(server_database, "SELECT count(*) = count(DISTINCT id) FROM items") == [(True,)]

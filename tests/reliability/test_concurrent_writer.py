"""Nothing is lost while another process writes during every sync (issue #14).

A second process writes to the device's file for a while (inserts, INSERT OR
REPLACE, UPSERT, updates, deletes, re-inserts) while ``sync()`` runs in a loop
against a real server_stub. Each sync must return; once the writer stops, two
more syncs bring the device, the server and a fresh device to exactly the
writer's own record of its final state. ``SWARM_LONG=1`` writes for longer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.client.conftest import ROOT
from tests.conftest import Device, Server, rows
from tests.serverdb import Database, server_rows

LONG = os.environ.get("SWARM_LONG") == "1"
SECONDS = 20.0 if LONG else 4.0


@pytest.mark.sqlite_only("a writer process on the device's file during its syncs is the subject; any server does")
@pytest.mark.parametrize("seed", [1, 2])
def test_a_writer_process_during_sync_loses_nothing(tmp_path: Path, server: Server, server_database: Database, device: Device,
                                                    seed: int) -> None:
    url = server()
    phone = device("phone", url)
    out = tmp_path / "writer.json"
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.concurrent_writer", str(phone.path), str(SECONDS), str(seed), "300", str(out)],
        cwd=ROOT,
    )
    syncs = 0
    try:
        while writer.poll() is None:
            result = phone.sync()  # returns while the writer keeps writing: the rounds are bounded
            assert result.ok, result.errors
            # the push (a page: 300 keys at most), then at most FOLLOW_UP_ROUNDS
            assert result.rounds <= 4, f"sync {syncs + 1} took {result.rounds} rounds: {result.summary()}"
            syncs += 1
    finally:
        writer.wait(60)
    assert writer.returncode == 0
    record = json.loads(out.read_text())
    assert record["writes"] > 100 and syncs > 1

    phone.sync()
    phone.sync()
    expected = {key: tuple(row) for key, row in record["rows"].items()}
    held = rows(phone.path)
    assert held == expected, {key: (held.get(key), expected.get(key)) for key in held.keys() ^ expected.keys()
                              or {key for key in held if held[key] != expected[key]}}
    assert server_rows(server_database) == expected
    laptop = device("laptop", url)
    laptop.sync()
    assert rows(laptop.path) == expected
    assert phone.pending_changes() == []

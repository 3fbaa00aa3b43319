"""The convergence swarm over real SQLite devices and a real server_stub, through real HTTP.

CI runs 20 seeds x 500 operations; ``SWARM_LONG=1`` runs the long tier (10 seeds x 5,000).
A failure prints its seed and the command that replays it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability.swarm import Swarm
from tests.reliability.world import ServerView, SqliteDevice, running_server
from tests.serverdb import Database

LONG = os.environ.get("SWARM_LONG") == "1"
SEEDS = range(1000, 1010) if LONG else range(20)
OPERATIONS = 5000 if LONG else 500


def run_swarm(seed: int, folder: Path, database: Database, operations: int) -> None:
    with running_server(database) as url:
        devices = [SqliteDevice(folder, f"device-{i}", url) for i in range(1 + seed % 5)]
        swarm = Swarm(seed, devices, ServerView(database))  # type: ignore[arg-type]
        try:
            swarm.run(operations)
            swarm.check()
        except BaseException:
            print(f"\nswarm seed {seed} failed; last steps:\n  " + "\n  ".join(swarm.log[-30:]))
            print(f"replay: .venv/bin/pytest 'tests/reliability/test_swarm.py::test_swarm_converges[{seed}]'"
                  + (" with SWARM_LONG=1" if LONG else ""))
            raise
        finally:
            for device in devices:
                device.close()


@pytest.mark.parametrize("seed", SEEDS)
def test_swarm_converges(seed: int, tmp_path: Path, server_database: Database) -> None:
    run_swarm(seed, tmp_path, server_database, OPERATIONS)

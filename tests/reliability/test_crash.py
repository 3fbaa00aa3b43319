"""Real crashes: SIGKILL a syncing device (or the server) at chosen points; nothing committed is lost.

CI kills the device 30 times; ``SWARM_LONG=1`` kills it 200 times.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from client_sdk import SyncClient, SyncError
from tests.loopback import free_port
from tests.reliability.crash_device import POINTS
from tests.reliability.world import MODELS, ServerView, SqliteDevice, create_device_file, running_server, server_config
from tests.serverdb import Database

LONG = os.environ.get("SWARM_LONG") == "1"
ROOT = Path(__file__).resolve().parents[2]


def integrity_ok(path: Path) -> bool:
    connection = sqlite3.connect(path)
    try:
        return connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        connection.close()


def write_local(path: Path, rng: random.Random, expected: dict[str, dict], prefix: str) -> None:
    """Commit a few writes from another connection, as any app would, and remember them."""
    connection = sqlite3.connect(path)
    try:
        with connection:
            for _ in range(rng.randint(1, 5)):
                key = f"{prefix}-{rng.randint(0, 15):02d}"
                if key in expected and rng.random() < 0.2:
                    connection.execute("DELETE FROM items WHERE id = ?", (key,))
                    del expected[key]
                    continue
                row = {"id": key, "title": f"t{rng.randint(0, 999)}", "notes": rng.randint(0, 9), "priority": None}
                connection.execute(
                    "INSERT INTO items (id, title, notes, priority) VALUES (:id, :title, :notes, :priority) "
                    "ON CONFLICT (id) DO UPDATE SET title = excluded.title, notes = excluded.notes",
                    row,
                )
                expected[key] = {**expected.get(key, {}), **row}
    finally:
        connection.close()


def crash_sync(path: Path, url: str, point: str) -> int:
    """Run a sync in a child process that SIGKILLs itself at ``point``; return its exit code."""
    child = subprocess.run(
        [sys.executable, "-m", "tests.reliability.crash_device", str(path), url, point, "victim"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert child.returncode in (0, -signal.SIGKILL), child.stderr
    return child.returncode


@pytest.mark.sqlite_only("the device's crash is the subject; any server does")
def test_a_device_killed_anywhere_in_a_sync_loses_nothing(tmp_path: Path, server_database: Database) -> None:
    rng = random.Random(11)
    kills = 200 if LONG else 30
    victim_path = tmp_path / "victim.db"
    create_device_file(victim_path)
    SyncClient(victim_path, models=MODELS, node_id="victim").close()  # install tracking before any write
    victim_rows: dict[str, dict] = {}
    peer_rows: dict[str, dict] = {}
    with running_server(server_database) as url:
        peer = SqliteDevice(tmp_path, "peer", url)
        killed = 0
        for round_number in range(kills):
            point = POINTS[round_number % len(POINTS)]
            write_local(victim_path, rng, victim_rows, "victim")
            write_local(peer.path, rng, peer_rows, "peer")  # something for the victim to pull and apply
            peer.sync()
            killed += crash_sync(victim_path, url, point) == -signal.SIGKILL
            assert integrity_ok(victim_path), f"integrity check failed after a kill at {point}"
        assert killed >= kills * 0.8, "most syncs should have died at their kill point"
        victim = SqliteDevice(tmp_path, "victim", url)
        victim.sync()
        peer.sync()
        server = ServerView(server_database).rows()
        expected = {**victim_rows, **peer_rows}
        assert victim.rows() == peer.rows() == server == expected
        victim.close()
        peer.close()


SERVER_TOML = """
database = "{database}"
schema = "{schema}"
[models]
items = "swarm.Item"
"""


def start_server(folder: Path, database: Database, port: int) -> subprocess.Popen:
    config = folder / "server.toml"
    config.write_text(SERVER_TOML.format(database=database, schema=server_config(database).schema))
    process = subprocess.Popen(
        [sys.executable, "-m", "server_stub", "--config", str(config), "--port", str(port), "--log-level", "critical"],
        cwd=ROOT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "server_stub did not start"
        time.sleep(0.05)



@pytest.mark.parametrize("seed", [1, 2])
def test_the_server_killed_mid_round_loses_no_acknowledged_write(tmp_path: Path, server_database: Database,
                                                                 seed: int) -> None:
    rng = random.Random(seed)
    port = free_port()
    url = f"http://127.0.0.1:{port}/sync/"
    server = start_server(tmp_path, server_database, port)
    devices = [SqliteDevice(tmp_path, f"device-{i}", url) for i in range(3)]
    expected: dict[str, dict[str, dict]] = {device.name: {} for device in devices}
    try:
        for _ in range(10 if not LONG else 60):
            for device in devices:
                write_local(device.path, rng, expected[device.name], device.name)
            timer = threading.Timer(rng.uniform(0.0, 0.08), server.send_signal, (signal.SIGKILL,))
            timer.start()
            for device in devices:
                try:
                    device.sync()
                except SyncError:
                    pass  # the server died under this sync: the device must simply try again later
            timer.join()
            server.wait(timeout=10)
            if isinstance(server_database, Path):  # the server's own file; PostgreSQL keeps its files whole itself
                assert integrity_ok(server_database)
            server = start_server(tmp_path, server_database, port)
        for _ in range(2):
            for device in devices:
                device.sync()
        everything = {key: row for rows in expected.values() for key, row in rows.items()}
        for device in devices:
            assert device.rows() == everything
    finally:
        for device in devices:
            device.close()
        server.kill()
        server.wait()

"""``python -m server_stub --workers N``: N uvicorn worker processes on one port, one database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from client_sdk import SyncClient
from tests.conftest import NOTES_SCHEMA, Device, rows
from tests.loopback import free_port
from tests.serverdb import Database

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def command_server(config: Path, *options: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``python -m server_stub --config config *options`` in a process group of its own, killed whole at the
    end (the workers too, whatever state the supervisor is in); yields the process and the sync URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "server_stub", "--config", str(config), "--port", str(port),
                                "--log-level", "warning", *options], cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).raise_for_status()
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, "server_stub did not come up"
                time.sleep(0.05)
        yield process, f"http://127.0.0.1:{port}/sync/"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def worker_processes(parent: int) -> int:
    """How many multiprocessing workers (not its resource tracker) ``parent`` has, read from /proc."""
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        count += ppid == parent and b"spawn_main" in command
    return count


def write(client: SyncClient, key: str, body: str) -> None:
    with client.connection:
        client.connection.execute("INSERT INTO notes (id, body, pinned) VALUES (?, ?, 0)", (key, body))


def test_two_worker_processes_serve_one_database_and_two_devices_converge(
    tmp_path: Path, server_database: Database, device: Device
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'database = "{server_database}"\nnode_id = "hub"\nschema = "{NOTES_SCHEMA}"\n'
                      '[models]\nnotes = "notes.Note"\n[limits]\nheader_timeout = 2\n')
    with command_server(config, "--workers", "2") as (process, url):
        assert worker_processes(process.pid) == 2
        a, b = device("device-a", url), device("device-b", url)
        for round_ in range(5):
            write(a, f"a{round_}", f"from a, round {round_}")
            write(b, f"b{round_}", f"from b, round {round_}")
            a.sync()
            b.sync()
        a.sync()
        assert rows(a.path) == rows(b.path) and len(rows(a.path)) == 10
        assert a.pending_count() == b.pending_count() == 0
        port = int(url.split(":")[2].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:  # a bound, not a measurement
            assert silent.recv(1) == b""  # the workers keep the config's header deadline too


def test_workers_must_be_a_positive_number(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "server_stub", "--config", str(tmp_path / "none.toml"), "--workers", "0"],
                          capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert done.returncode == 2 and "--workers: must be a positive integer, got '0'" in done.stderr

"""Real parts for the client tests: SQLite files in tmp_path, server_stub under uvicorn on 127.0.0.1,
and commands run as a user runs them (a subprocess from the repository root)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from client_sdk import HttpTransport, SyncClient
from server_stub import ServerConfig, create_app
from tests.loopback import free_port, serve as serve_app

ROOT = Path(__file__).resolve().parents[2]
NOTES_SCHEMA = "CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY, body TEXT, pinned BOOLEAN);"
NOTES = {"notes": "notes.Note"}
NOTE = "notes.Note"


@contextmanager
def serve(config: ServerConfig, port: int = 0) -> Iterator[str]:
    """server_stub for ``config`` on 127.0.0.1:``port`` (0: a free one); yields the sync URL."""
    with serve_app(create_app(config), port) as base:
        yield f"{base}/sync/"


def wait_until(condition: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it is truthy; fail after ``timeout`` seconds (a bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def create_file(path: Path, schema: str = NOTES_SCHEMA) -> Path:
    """The app's own schema, created the way an app does before it opens the SDK."""
    connection = sqlite3.connect(path)
    try:
        connection.executescript(schema)
    finally:
        connection.close()
    return path


def rows(path: Path, table: str = "notes") -> dict[str, tuple[Any, ...]]:
    """A table's rows by id, read through a fresh connection (WAL lets it while others write)."""
    connection = sqlite3.connect(path)
    try:
        return {row[0]: tuple(row[1:]) for row in connection.execute(f"SELECT * FROM {table} ORDER BY id")}
    finally:
        connection.close()


def run(*args: str, check: bool = True, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``python <args>``, from the repository root unless told otherwise, as a user types it."""
    process = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if check and process.returncode != 0:
        pytest.fail(f"{args} exited {process.returncode}\nstdout:\n{process.stdout}\nstderr:\n{process.stderr}")
    return process


Server = Callable[..., str]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """``server(schema=..., models=..., port=..., tokens=...)`` starts a server_stub on ``tmp_path/server.db``
    (notes by default) and returns its sync URL; it stops at the end of the test."""
    with ExitStack() as stack:
        def start(schema: str = NOTES_SCHEMA, models: dict[str, str] | None = None, port: int = 0,
                  **options: Any) -> str:
            config = ServerConfig(database=tmp_path / "server.db", models=models or NOTES, schema=schema, **options)
            return stack.enter_context(serve(config, port))
        yield start


Device = Callable[..., SyncClient]


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Device]:
    """``device(name, url)`` opens a notes SyncClient on ``tmp_path/<name>.db`` with a fast-failing transport."""
    with ExitStack() as stack:
        def open_device(name: str, url: str | None = None, **options: Any) -> SyncClient:
            path = create_file(tmp_path / f"{name}.db")
            transport = HttpTransport(url, retries=0, timeout=10.0) if url else None
            return stack.enter_context(SyncClient(path, models=NOTES, node_id=name, transport=transport, **options))
        yield open_device

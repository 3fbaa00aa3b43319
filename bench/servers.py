"""Servers the benches start on loopback: server_stub in a subprocess, and waiting for one to answer."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from client_sdk.protocol.wire import SyncRecord

ROOT = Path(__file__).resolve().parents[1]

SCHEMA = """
CREATE TABLE TodoList (id TEXT PRIMARY KEY, name TEXT);
CREATE TABLE Task (
    id TEXT PRIMARY KEY, list_id TEXT REFERENCES TodoList (id), title TEXT, done BOOLEAN, priority INTEGER, notes TEXT
);
"""
MODELS = {"TodoList": "todo.TodoList", "Task": "todo.Task"}
"""The to-do tables the sync benches serve (the server's schema and the client's)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_healthy(base: str, alive: Callable[[], bool], what: str) -> None:
    """Return once ``base``/health answers; stop the bench if the server died or took over 60 s."""
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(base + "/health").raise_for_status()
            return
        except httpx.TransportError:
            if not alive() or time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start") from None
            time.sleep(0.05)


@contextmanager
def running_server(config_path: Path) -> Iterator[tuple[str, int]]:
    """``python -m server_stub`` in a subprocess on a free loopback port; yields its base URL and pid."""
    port = free_port()
    command = [sys.executable, "-m", "server_stub", "--config", str(config_path), "--port", str(port),
               "--log-level", "warning"]
    server = subprocess.Popen(command, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, lambda: server.poll() is None, "server_stub")
        yield base, server.pid
    finally:
        server.terminate()
        server.wait(30)


def stamped(data: dict[str, Any], stamp: int) -> SyncRecord:
    """A record of ``data`` with every field stamped ``stamp``, as a server seeded in bulk stores it."""
    return SyncRecord(data["id"], data, {name: stamp for name in data})

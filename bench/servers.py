"""Servers the benches start on loopback: server_stub in a subprocess, and waiting for one to answer."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

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


class ServerDidNotStart(SystemExit):
    """server_stub exited, or did not answer, before it served; ``error`` is the last line it wrote."""

    def __init__(self, error: str) -> None:
        super().__init__(f"server_stub did not start: {error}")
        self.error = error


class _ErrorRelay(threading.Thread):
    """Passes a server's standard error on to ours, held back until the server is up: a server that
    fails to start is then reported once, as :class:`ServerDidNotStart`, not also as a traceback."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.held: list[bytes] = []
        self.passing = False
        self.lock = threading.Lock()

    def run(self) -> None:
        for line in self.stream:
            with self.lock:
                if self.passing:
                    sys.stderr.buffer.write(line)
                    sys.stderr.flush()
                else:
                    self.held.append(line)

    def pass_through(self) -> None:
        with self.lock:
            sys.stderr.buffer.write(b"".join(self.held))
            sys.stderr.flush()
            self.held.clear()
            self.passing = True

    def last_line(self) -> str:
        with self.lock:
            lines = [line.decode(errors="replace").strip() for line in self.held]
        return next((line for line in reversed(lines) if line), "")


@contextmanager
def running_server(config_path: Path, workers: int = 1) -> Iterator[tuple[str, int]]:
    """``python -m server_stub`` (``--workers``) in a subprocess on a free loopback port; yields its base URL
    and pid (with more than one worker, the supervisor's). Raises :class:`ServerDidNotStart` if it does not come up."""
    port = free_port()
    command = [sys.executable, "-m", "server_stub", "--config", str(config_path), "--port", str(port),
               "--log-level", "warning", "--workers", str(workers)]
    server = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE)
    assert server.stderr is not None
    relay = _ErrorRelay(server.stderr)
    relay.start()
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_healthy(base, lambda: server.poll() is None, "server_stub")
        except SystemExit:
            if server.poll() is not None:
                relay.join(5)  # all it wrote before it exited
            raise ServerDidNotStart(relay.last_line() or "it exited without a word, or did not answer in time") from None
        relay.pass_through()
        yield base, server.pid
    finally:
        server.terminate()
        server.wait(30)
        relay.join(5)


def stamped(data: dict[str, Any], stamp: int) -> SyncRecord:
    """A record of ``data`` with every field stamped ``stamp``, as a server seeded in bulk stores it."""
    return SyncRecord(data["id"], data, {name: stamp for name in data})

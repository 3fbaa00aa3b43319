"""Slow clients, a full file table and missing credentials, against real servers on 127.0.0.1.

The deadlines are tested through ``python -m server_stub`` (the command is what
gives uvicorn the protocol that keeps the head's deadline), with real sockets
sending one byte at a time, and timeouts of a second or so configured.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from client_sdk import InvalidParameterError, SyncManifest
from server_stub import create_app, load_config
from server_stub.guards import AcceptFailureLog
from tests.loopback import free_port, serve
from tests.serverdb import Database

from .conftest import TODO_SCHEMA, todo_config

ROOT = Path(__file__).resolve().parents[2]
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
LIVENESS = 10.0
"""Generous upper bound for anything that must happen "after the timeout" (a bound, not a measurement)."""


@contextmanager
def command_server(folder: Path, database: Database, limits: str) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """``python -m server_stub`` on the todo schema in ``database`` with ``limits`` (TOML lines); yields the
    process, its base URL and the file its standard error goes to."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "server.toml"
    config.write_text(f'database = "{database}"\nnode_id = "hub"\nschema = """{TODO_SCHEMA}"""\n'
                      f'[models]\nTodoList = "todo.TodoList"\nTask = "todo.Task"\n[limits]\n{limits}\n')
    port = free_port()
    errors = folder / "stderr.log"
    with errors.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "server_stub", "--config", str(config), "--port", str(port),
                                    "--log-level", "warning"], cwd=ROOT, stderr=stderr)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(base + "/health", timeout=5).raise_for_status()
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, errors.read_text()
                time.sleep(0.05)
        yield process, base, errors
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory, module_server_database: Callable[[], Database]) -> Iterator[str]:
    limits = f"header_timeout = {HEADER_TIMEOUT}\nbody_timeout = {BODY_TIMEOUT}\nrequest_bytes_max = 1000"
    with command_server(tmp_path_factory.mktemp("slow"), module_server_database(), limits) as (_, base, _errors):
        yield base


def connect(base: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=LIVENESS)


def trickle(sock: socket.socket, data: bytes, interval: float = 0.1) -> tuple[int, bytes, bool]:
    """Send ``data`` one byte per ``interval`` while reading what comes back. Returns how many bytes
    went out, what was received, and whether the server closed the connection (then it stops)."""
    received = bytearray()
    sent = 0
    deadline = time.monotonic() + LIVENESS + len(data) * interval
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], interval)
        if readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return sent, bytes(received), True
            if not chunk:
                return sent, bytes(received), True
            received += chunk
            continue
        if sent < len(data):
            try:
                sock.sendall(data[sent:sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                return sent, bytes(received), True
            sent += 1
    return sent, bytes(received), False


def head(method: str, path: str, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{name.replace('_', '-')}: {value}"
                                                              for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One HTTP/1.1 response with a Content-Length: (status line and headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in top.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    return top, rest


def test_a_connection_that_sends_nothing_is_closed(slow_server: str) -> None:
    with connect(slow_server) as sock:
        started = time.monotonic()
        assert trickle(sock, b"") == (0, b"", True)
        assert time.monotonic() - started < LIVENESS


def test_a_head_sent_one_byte_a_time_is_cut_off_before_it_is_complete(slow_server: str) -> None:
    request = head("GET", "/health", User_Agent="slowloris", Accept="*/*")
    with connect(slow_server) as sock:
        sent, received, closed = trickle(sock, request)
    assert closed and received == b"" and sent < len(request)


def test_a_body_sent_one_byte_a_time_is_answered_408_and_the_connection_closed(slow_server: str) -> None:
    body = b'{"node_id": "device-a", "checkpoint": 0, "payloads": []}' * 3
    request = head("POST", "/sync/", Content_Type="application/json", Content_Length=str(len(body)))
    with connect(slow_server) as sock:
        sock.sendall(request)
        sent, received, closed = trickle(sock, body)
    assert closed and sent < len(body)
    top, _, answer = received.partition(b"\r\n\r\n")
    assert top.startswith(b"HTTP/1.1 408 ") and b"connection: close" in top.lower()
    assert answer == b'{"ok":false,"error":"Request body not received in time"}'


def test_the_rest_of_a_refused_body_must_come_in_time_too(slow_server: str) -> None:
    """A body over ``request_bytes_max`` by its Content-Length is refused at once; uvicorn alone
    would then read the rest of it, at whatever pace, for ever."""
    request = head("POST", "/sync/", Content_Type="application/json", Content_Length="5000")
    with connect(slow_server) as sock:
        sock.sendall(request)
        sent, received, closed = trickle(sock, b"x" * 5000)
    assert closed and sent < 5000
    assert received.startswith(b"HTTP/1.1 413 ") and received.endswith(b'{"ok":false,"error":"Request body too large"}')


def test_a_kept_alive_connection_may_idle_between_requests_longer_than_the_head_timeout(slow_server: str) -> None:
    """The head's deadline starts with the request's first byte; idling is the keep-alive timeout's business
    (uvicorn's default: 5 s)."""
    body = SyncManifest("device-a", 0, node_time=int(time.time())).seal().to_json().encode()
    with connect(slow_server) as sock:
        for _ in range(2):
            sock.sendall(head("GET", "/health"))
            top, answer = read_response(sock)
            assert top.startswith(b"HTTP/1.1 200 ") and b'"node_id":"hub"' in answer
            time.sleep(HEADER_TIMEOUT + 0.5)
        sock.sendall(head("POST", "/sync/", Content_Type="application/json", Content_Length=str(len(body))) + body)
        top, answer = read_response(sock)
        assert top.startswith(b"HTTP/1.1 200 ") and b'"ok":true' in answer


def test_a_normal_client_is_untouched_by_the_deadlines(slow_server: str) -> None:
    with httpx.Client(base_url=slow_server, timeout=LIVENESS) as client:
        for _ in range(20):
            assert client.get("/health").json() == {"ok": True, "node_id": "hub"}


@pytest.mark.skipif(not hasattr(resource, "prlimit") or not os.path.isdir("/proc/self/fd"),
                    reason="needs Linux: prlimit on another process and /proc/<pid>/fd")
def test_at_the_file_descriptor_limit_accept_failures_are_one_line_not_a_flood(tmp_path: Path, server_database: Database) -> None:
    """Real EMFILE: the server's own open-file limit is lowered (prlimit) to just above what it has
    open, then more clients connect than it may accept. asyncio alone logs a traceback for each
    failed accept, up to the listen backlog (2048) at each retry, every second."""
    with command_server(tmp_path, server_database, "header_timeout = 60") as (process, base, errors), ExitStack() as clients:
        in_use = len(os.listdir(f"/proc/{process.pid}/fd"))
        soft, hard = resource.prlimit(process.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(process.pid, resource.RLIMIT_NOFILE, (in_use + 2, hard))
        try:
            for _ in range(20):
                clients.enter_context(connect(base))
            time.sleep(2.5)  # the loop retries accepting every second: at least two more bursts of failures
        finally:
            resource.prlimit(process.pid, resource.RLIMIT_NOFILE, (soft, hard))
        clients.close()
        deadline = time.monotonic() + LIVENESS
        while True:  # the server recovers once descriptors are free again
            try:
                assert httpx.get(base + "/health", timeout=LIVENESS).json()["ok"] is True
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        log = errors.read_text()
    lines = [line for line in log.splitlines() if "accept" in line]
    assert lines == ["socket.accept() out of system resource: [Errno 24] Too many open files"], log[:3000]
    assert "Traceback" not in log


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def accept_failure(code: int) -> dict[str, Any]:
    return {"message": "socket.accept() out of system resource", "exception": OSError(code, os.strerror(code))}


def test_accept_failures_are_logged_once_per_kind_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    """The rate limiter alone, on a fake clock (the test above causes the real thing)."""
    clock = FakeClock()
    passed: list[dict[str, Any]] = []
    handler = AcceptFailureLog(lambda loop, context: passed.append(context), interval=10.0, clock=clock)
    loop = object()  # not used for accept failures nor by the fallback
    with caplog.at_level(logging.ERROR, logger="server_stub"):
        for step in range(1000):
            clock.now = step * 0.009
            handler(loop, accept_failure(errno.EMFILE))  # type: ignore[arg-type]
        handler(loop, accept_failure(errno.ENFILE))  # type: ignore[arg-type]
        clock.now = 10.5
        handler(loop, accept_failure(errno.EMFILE))  # type: ignore[arg-type]
        other = {"message": "Task exception was never retrieved", "exception": ValueError("x")}
        handler(loop, other)  # type: ignore[arg-type]
    assert [record.getMessage() for record in caplog.records] == [
        "socket.accept() out of system resource: [Errno 24] Too many open files",
        "socket.accept() out of system resource: [Errno 23] Too many open files in system",
        "socket.accept() out of system resource: [Errno 24] Too many open files (999 more like it since the last such line)",
    ]
    assert all(record.exc_info is None for record in caplog.records) and passed == [other]


def test_a_401_names_the_bearer_scheme(server_database: Database) -> None:
    with serve(create_app(todo_config(server_database, tokens={"token-a": frozenset({"device-a"})}))) as base:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dG9rZW4tYQ=="}):
            response = httpx.post(base + "/sync/", content=b"{}", headers={"Content-Type": "application/json", **headers})
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
            assert response.json() == {"ok": False, "error": "Missing or invalid bearer token"}
        assert "www-authenticate" not in httpx.post(base + "/sync/", content=b"{}", headers={
            "Content-Type": "application/json", "Authorization": "Bearer token-a"}).headers


def write_config(tmp_path: Path, limits: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(f'database = "s.db"\n[models]\nT = "a.T"\n[limits]\n{limits}\n')
    return path


def test_the_new_limits_load_from_toml_with_their_defaults(tmp_path: Path) -> None:
    defaults = load_config(write_config(tmp_path, ""))
    assert (defaults.records_per_model_max, defaults.header_timeout, defaults.body_timeout) == (5000, 10.0, 30.0)
    config = load_config(write_config(tmp_path, "records_per_model_max = 200\nheader_timeout = 2.5\nbody_timeout = 60"))
    assert (config.records_per_model_max, config.header_timeout, config.body_timeout) == (200, 2.5, 60)


@pytest.mark.parametrize("limits", [
    "records_per_model_max = 0", "records_per_model_max = 1.5", "records_per_model_max = '5000'",
    "header_timeout = 0", "header_timeout = -1", "header_timeout = true", "header_timeout = '10'",
    "body_timeout = nan", "body_timeout = inf",
])
def test_bad_new_limits_are_refused_naming_the_key(tmp_path: Path, limits: str) -> None:
    with pytest.raises(InvalidParameterError, match=f"limits.{limits.split()[0]}"):
        load_config(write_config(tmp_path, limits))

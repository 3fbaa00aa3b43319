"""The per-request record limit (PROTOCOL.md section 12): refused with 413 before any work, and no
one else waits long while the server works through a request of the largest allowed size."""

from __future__ import annotations

import gzip
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from client_sdk import HttpTransport, HybridLogicalClock, ModelPayload, SyncAbortedError, SyncClient, SyncManifest, SyncRecord
from server_stub import ServerConfig, create_app
from tests.loopback import serve
from tests.serverdb import Database, server_query, server_snapshot

from .conftest import LIST, TASK, todo_config

HEADERS = {"Content-Type": "application/json", "Content-Encoding": "gzip", "Accept-Encoding": "gzip"}
CLOCK = HybridLogicalClock()


def tasks(count: int, notes: str = "") -> dict[str, SyncRecord]:
    """``count`` new Task records with a few columns each, all fields stamped now."""
    records = {}
    for number in range(count):
        key = str(uuid.uuid4())
        data = {"id": key, "title": f"task {number}", "done": number % 2 == 0, "priority": number % 5, "notes": notes}
        stamp = CLOCK.now()
        records[key] = SyncRecord(key, data, {name: stamp for name in data})
    return records


def lists(count: int) -> dict[str, SyncRecord]:
    records = {}
    for number in range(count):
        key = str(uuid.uuid4())
        stamp = CLOCK.now()
        records[key] = SyncRecord(key, {"id": key, "name": f"list {number}"}, {"id": stamp, "name": stamp})
    return records


def body(node_id: str, *payloads: ModelPayload) -> bytes:
    manifest = SyncManifest(node_id, 0, node_time=int(time.time()), payloads=list(payloads)).seal()
    return gzip.compress(manifest.to_json().encode("ascii"))


def post(base: str, content: bytes, timeout: float = 60.0) -> httpx.Response:
    return httpx.post(base + "/sync/", content=content, headers=HEADERS, timeout=timeout)


def count_rows(database: Database, table: str) -> int:
    [(count,)] = server_query(database, f"SELECT count(*) FROM {table}")
    return int(count)


@pytest.fixture
def default_server(server_database: Database) -> Iterator[tuple[str, ServerConfig]]:
    """A todo server with the default limits, and its config."""
    config = todo_config(server_database)
    with serve(create_app(config)) as base:
        yield base, config


def test_the_default_limit_is_5000_records_per_model(default_server: tuple[str, ServerConfig]) -> None:
    base, config = default_server
    assert config.records_per_model_max == 5000
    before = server_snapshot(config.database)
    response = post(base, body("device-a", ModelPayload(TASK, tasks(5001))))
    assert response.status_code == 413
    assert response.json() == {"ok": False, "error": (
        "Too many records: model 'todo.Task' has 5001 records and deletes in this request, "
        "over the limit of 5000 per model per request; send them in smaller batches")}
    assert server_snapshot(config.database) == before  # nothing written: not a row, not a clock move

    accepted = post(base, body("device-a", ModelPayload(TASK, tasks(5000))))
    assert accepted.status_code == 200 and accepted.json()["ok"] is True
    assert count_rows(config.database, "Task") == 5000


def test_records_and_deletes_count_together_per_model(server_database: Database) -> None:
    config = todo_config(server_database, records_per_model_max=10)
    with serve(create_app(config)) as base:
        deletes = {str(uuid.uuid4()): CLOCK.now() for _ in range(3)}
        at_limit = [ModelPayload(LIST, lists(10)), ModelPayload(TASK, tasks(7), deletes)]
        assert post(base, body("device-a", *at_limit)).status_code == 200  # 10 of each model: the limit is per model
        before = server_snapshot(config.database)
        over = [ModelPayload(LIST, lists(2)), ModelPayload(TASK, tasks(8), {str(uuid.uuid4()): CLOCK.now() for _ in range(3)})]
        response = post(base, body("device-a", *over))
        assert response.status_code == 413
        assert response.json()["error"].startswith("Too many records: model 'todo.Task' has 11 records and deletes")
        assert "limit of 10 per model" in response.json()["error"]
        assert server_snapshot(config.database) == before


def test_health_and_a_small_sync_answer_while_the_largest_allowed_request_is_worked_on(
    default_server: tuple[str, ServerConfig],
) -> None:
    """5,000 records (the default limit) of a few columns each. The big body goes over a raw socket
    all but its last byte, so that the others are sent the moment the server has all of it. The
    bound is for liveness, not speed: nobody may wait for the big round as long as it lasts."""
    base, config = default_server
    big = body("device-big", ModelPayload(TASK, tasks(5000, notes="n" * 200)))
    small = body("device-small", ModelPayload(LIST, lists(1)))
    port = int(base.rsplit(":", 1)[1])
    head = (f"POST /sync/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Encoding: gzip\r\nContent-Length: {len(big)}\r\nConnection: close\r\n\r\n").encode()
    answer = bytearray()

    def read_answer(sock: socket.socket) -> None:
        while chunk := sock.recv(65536):
            answer.extend(chunk)

    with httpx.Client(timeout=60) as client, socket.create_connection(("127.0.0.1", port)) as sock:
        assert client.get(base + "/health").status_code == 200  # its connection is made before the clock starts
        sock.sendall(head + big[:-1])
        reader = threading.Thread(target=read_answer, args=(sock,))
        reader.start()
        sock.sendall(big[-1:])
        sent = time.monotonic()
        health = client.get(base + "/health")
        health_took = time.monotonic() - sent
        started = time.monotonic()
        pushed = client.post(base + "/sync/", content=small, headers=HEADERS)
        small_took = time.monotonic() - started
        reader.join(60)
    assert answer.startswith(b"HTTP/1.1 200 "), bytes(answer[:200])
    assert health.status_code == 200 and pushed.status_code == 200 and pushed.json()["ok"] is True
    assert health_took < 1.0 and small_took < 1.0, (health_took, small_took)
    assert count_rows(config.database, "Task") == 5000 and count_rows(config.database, "TodoList") == 1


@contextmanager
def notes_client(database: Database, tmp_path: Path, **limits: Any) -> Iterator[tuple[ServerConfig, SyncClient]]:
    """A server_stub for a notes table on ``database`` (with ``limits``) and a SyncClient syncing with it."""
    config = ServerConfig(database=database, models={"notes": "notes.Note"},
                          schema="CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT);", **limits)
    device = tmp_path / "device.db"
    with closing(sqlite3.connect(device)) as connection, connection:
        connection.execute("CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT)")
    with serve(create_app(config)) as base, \
            SyncClient(device, models={"notes": "notes.Note"}, node_id="laptop",
                       transport=HttpTransport(base + "/sync/", retries=0, timeout=60)) as client:
        yield config, client


def test_the_sdk_pages_6000_pending_rows_under_the_default_limit(server_database: Database, tmp_path: Path) -> None:
    with notes_client(server_database, tmp_path) as (config, client):
        with client.connection as connection:
            connection.executemany("INSERT INTO notes (id, body) VALUES (?, ?)",
                                   [(f"note-{number:04d}", f"body {number}") for number in range(6000)])
        assert len(client.pending_changes()) == 6000
        client.sync()
        assert client.pending_changes() == [] and count_rows(config.database, "notes") == 6000


def test_a_server_limit_under_the_sdk_batch_is_a_clear_refusal(server_database: Database, tmp_path: Path) -> None:
    """The other side of the test above: the limit is really in force on what the SDK sends."""
    with notes_client(server_database, tmp_path, records_per_model_max=999) as (config, client):
        with client.connection as connection:
            connection.executemany("INSERT INTO notes (id, body) VALUES (?, ?)", [(f"n{n}", "x") for n in range(1000)])
        with pytest.raises(SyncAbortedError) as refused:
            client.sync()
        assert refused.value.status == 413 and "over the limit of 999" in str(refused.value)
        assert len(client.pending_changes()) == 1000 and count_rows(config.database, "notes") == 0

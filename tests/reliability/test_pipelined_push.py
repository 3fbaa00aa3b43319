"""A write made while a pipelined push is under way is never lost, and nothing stale wins (issue #16).

A device pushes many pages; while page n is at the server, page n+1 is collected (``_push_round``)
and sent once n's answer is applied. Another connection writes at each point of that: while page n
is in flight (on the exchange's worker thread, racing the collection of page n+1), and after page n
was answered, before it is applied, when page n+1 has been collected but not sent. It updates and
deletes rows of page n and of page n+1, a row of a later page, and inserts a new one. Afterwards the
device, the server and a second device hold exactly the writer's final state, and within the push
only a row written again is pushed twice.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from client_sdk import HttpTransport, SyncClient, SyncManifest, SyncPhase
from tests.conftest import NOTES, Server, create_file, rows
from tests.serverdb import Database, server_rows

PAGE = 40
ROWS = 5 * PAGE


class Recording:
    """An HTTP transport that keeps the requests it carries and calls ``hook`` (on the exchange's own
    thread) before sending the request of round ``at``."""

    def __init__(self, url: str) -> None:
        self.inner = HttpTransport(url, retries=0, timeout=10.0)
        self.requests: list[SyncManifest] = []
        self.at = 0
        self.hook: Any = None

    def exchange(self, manifest: SyncManifest) -> SyncManifest:
        self.requests.append(manifest)
        if len(self.requests) == self.at and self.hook is not None:
            self.hook()
        return self.inner.exchange(manifest)

    def close(self) -> None:
        self.inner.close()


def keys_of(request: SyncManifest) -> list[str]:
    payload = request.payload("notes.Note")
    return [] if payload is None else sorted([*payload.records, *payload.deletes])


def write(path: Path, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
    with closing(sqlite3.connect(path, timeout=30)) as connection, connection:
        for sql, params in statements:
            connection.execute(sql, params)


@pytest.fixture
def device(tmp_path: Path, server: Server) -> Iterator[tuple[SyncClient, Recording, SyncClient]]:
    url = server()
    transport = Recording(url)
    client = SyncClient(create_file(tmp_path / "device.db"), models=NOTES, node_id="device", transport=transport,
                        batch_size=PAGE)
    other = SyncClient(create_file(tmp_path / "other.db"), models=NOTES, node_id="other",
                       transport=HttpTransport(url, retries=0, timeout=10.0))
    yield client, transport, other
    client.close()
    other.close()


@pytest.mark.parametrize("point", ["while page 2 is in flight", "after page 2 was answered"])
def test_writes_during_a_pipelined_push_are_neither_lost_nor_beaten_by_stale_pages(
    device: tuple[SyncClient, Recording, SyncClient], server_database: Database, point: str
) -> None:
    client, transport, other = device
    write(client.path, [("INSERT INTO notes (id, body, pinned) VALUES (?, ?, 0)", (f"n{i:03}", f"v{i}"))
                        for i in range(ROWS)])
    first, second, later = f"n{PAGE + 1:03}", f"n{2 * PAGE + 1:03}", f"n{4 * PAGE + 1:03}"
    statements = [
        ("UPDATE notes SET body = 'edited' WHERE id = ?", (first,)),        # in page 2: in flight
        ("DELETE FROM notes WHERE id = ?", (f"n{PAGE + 2:03}",)),           # in page 2
        ("UPDATE notes SET body = 'edited' WHERE id = ?", (second,)),       # in page 3: collected ahead
        ("DELETE FROM notes WHERE id = ?", (f"n{2 * PAGE + 2:03}",)),       # in page 3
        ("UPDATE notes SET body = 'edited' WHERE id = ?", (later,)),        # in a later page
        ("INSERT INTO notes (id, body, pinned) VALUES ('new', 'written meanwhile', 1)", ()),
    ]
    written: list[bool] = []

    def writer() -> None:
        write(client.path, statements)
        written.append(True)

    if point == "while page 2 is in flight":
        transport.at, transport.hook = 2, writer
    else:
        rounds = Counter[SyncPhase]()

        def on_phase(phase: SyncPhase) -> None:
            rounds[phase] += 1
            if phase is SyncPhase.RECONCILING and rounds[phase] == 2:
                writer()
        client.engine.on_phase = on_phase

    result = client.sync()
    client.engine.on_phase = None
    assert written
    assert transport.requests[1].has_more, "page 2 left more to push: page 3 was collected while it was in flight"
    pushed = Counter(key for keys in result.pushed.values() for key in keys)
    assert {key for key, count in pushed.items() if count > 1} <= {first, second, later, f"n{PAGE + 2:03}",
                                                                    f"n{2 * PAGE + 2:03}"}

    client.sync()
    client.sync()
    other.sync()
    expected = {f"n{i:03}": (f"v{i}", 0) for i in range(ROWS)}
    for key in (first, second, later):
        expected[key] = ("edited", 0)
    del expected[f"n{PAGE + 2:03}"], expected[f"n{2 * PAGE + 2:03}"]
    expected["new"] = ("written meanwhile", 1)
    assert rows(client.path) == expected
    assert server_rows(server_database) == expected
    assert rows(other.path) == expected
    assert client.pending_changes() == []

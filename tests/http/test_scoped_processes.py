"""Two server processes on one database answering the same user: no write falls between a user's
refresh of their visible rows and the round that reads them (on SQLite and on PostgreSQL).

A user's visible rows are brought up to date at the start of each of their
requests; a row they can see that is updated later is delivered at its new
last_modified. If another process's update committed after that refresh but
before the round read its page, the round would answer with a checkpoint past
the update without sending it, and the next refresh would record the update at
a stamp the device has already passed: lost for that user. The refresh and the
round run in one transaction, so the other process's write waits for both.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from client_sdk.protocol.hlc import next_stamp, system_ms
from client_sdk.protocol.wire import ModelPayload, SyncManifest, SyncRecord
from server_stub.config import ServerConfig
from server_stub.service import SyncService

LABEL = "notes.Note"
SCHEMA = "CREATE TABLE notes (id TEXT PRIMARY KEY, owner TEXT, body TEXT);"


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return tmp_path / "server.db"


@pytest.fixture
def two_processes(database: Path | str) -> Iterator[tuple[SyncService, SyncService]]:
    config = ServerConfig(database=database, models={"notes": LABEL}, schema=SCHEMA, node_id="server",
                          tokens={"t": frozenset({"alice-1", "alice-2"})}, users={"t": "alice"},
                          scopes={"notes": "owner = :user"}, clock_drift_max=None)
    first = SyncService(config)
    second = SyncService(config)
    yield first, second
    second.close()
    first.close()


def push(node: str, body: str) -> SyncManifest:
    stamp = next_stamp(0, system_ms())
    record = SyncRecord("n1", {"id": "n1", "owner": "alice", "body": body}, {"owner": stamp, "body": stamp})
    return SyncManifest(node, 0, payloads=[ModelPayload(LABEL, {"n1": record})]).seal()


def bodies(answer: SyncManifest) -> list[str]:
    payload = answer.payload(LABEL)
    return [] if payload is None else [record.data["body"] for record in payload.records.values()]


def test_an_update_another_process_commits_while_a_users_round_runs_reaches_that_user(
    two_processes: tuple[SyncService, SyncService],
) -> None:
    first, second = two_processes
    first.process(push("alice-1", "v1"), "alice")
    answer, _ = first.process(SyncManifest("alice-1", 0).seal(), "alice")
    assert bodies(answer) == ["v1"]
    checkpoint = answer.checkpoint

    other_write = threading.Thread(target=second.process, args=(push("alice-2", "v2"), "alice"))
    storage, engine = first._storage, first._engine  # the seam between the refresh and the round
    with storage.scoped_to("alice"):
        other_write.start()
        other_write.join(0.5)  # the other process tries to commit its update now
        during, _ = engine.process(SyncManifest("alice-1", checkpoint).seal())
    other_write.join(10)
    assert not other_write.is_alive()
    after, _ = first.process(SyncManifest("alice-1", during.checkpoint).seal(), "alice")
    assert "v2" in bodies(during) + bodies(after)

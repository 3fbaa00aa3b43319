"""Several server processes on one PostgreSQL database: no pull skips a row that commits late.

Each ``SyncService`` here has its own connection, as a server process has. A
round of one of them is held open after taking its stamp and writing its row;
meanwhile another commits a row and a device pulls through it. The pull's
checkpoint promises every row stamped at or before it: the held row must be in
that answer or stamped after that checkpoint, never skipped for good.

The last test takes the mechanism away (stamps taken outside the round's
transaction, no round lock) and shows that this very scenario then loses the row:
the check has teeth.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from client_sdk.protocol.hlc import next_stamp, system_ms
from client_sdk.protocol.wire import ModelPayload, SyncManifest, SyncRecord
from server_stub.config import ServerConfig
from server_stub.postgres.storage import PostgresServerStorage
from server_stub.service import SyncService

pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[postgres]')")

SCHEMA = "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT);"
LABEL = "notes.Note"


def config(url: str) -> ServerConfig:
    return ServerConfig(database=url, models={"notes": LABEL}, schema=SCHEMA, node_id="server", clock_drift_max=None)


@pytest.fixture
def services(postgres_url: str) -> Iterator[Callable[[], SyncService]]:
    opened: list[SyncService] = []

    def open_service() -> SyncService:
        opened.append(SyncService(config(postgres_url)))
        return opened[-1]

    yield open_service
    for service in opened:
        service.close()


def push(node: str, key: str, body: str) -> SyncManifest:
    stamp = next_stamp(0, system_ms())
    record = SyncRecord(key, {"id": key, "body": body}, {"body": stamp})
    return SyncManifest(node, 0, payloads=[ModelPayload(LABEL, {key: record})]).seal()


def pull(service: SyncService, checkpoint: int) -> tuple[set[str], int]:
    answer, _ = service.process(SyncManifest("reader", checkpoint).seal())
    payload = answer.payload(LABEL)
    return (set() if payload is None else set(payload.records)), answer.checkpoint


def write_held_open(storage: PostgresServerStorage, written: threading.Event, release: threading.Event) -> None:
    """A round of another process: its stamp taken and its row written, its commit waiting for ``release``."""
    with storage.transaction():
        stamp = storage.clock.now()
        storage.upsert_many(LABEL, {"late": SyncRecord("late", {"id": "late", "body": "committed late"}, {"body": stamp})},
                            received_at=stamp)
        written.set()
        release.wait(10)


def pulls_while_a_round_is_held_open(held: PostgresServerStorage, other: SyncService) -> list[tuple[set[str], int]]:
    """Hold a round open on ``held``; meanwhile push through ``other`` and pull from it; then let the round commit
    and pull on from each checkpoint the pulls returned. The answers, in order."""
    written, release = threading.Event(), threading.Event()
    writer = threading.Thread(target=write_held_open, args=(held, written, release))
    writer.start()
    assert written.wait(10)
    answers: list[tuple[set[str], int]] = []

    def push_then_pull() -> None:
        other.process(push("device-b", "early", "committed first"))
        answers.append(pull(other, 0))

    reader = threading.Thread(target=push_then_pull)
    reader.start()
    reader.join(0.5)  # with the round lock, both wait for the held round: give them the time to try
    release.set()
    writer.join(10)
    reader.join(10)
    assert not reader.is_alive() and not writer.is_alive()
    answers.append(pull(other, answers[0][1]))
    return answers


def delivered(answers: list[tuple[set[str], int]]) -> set[str]:
    return set().union(*(keys for keys, _ in answers))


def test_a_pull_through_one_process_never_skips_a_row_another_process_commits_late(
    services: Callable[[], SyncService], postgres_url: str
) -> None:
    other = services()
    held = PostgresServerStorage(postgres_url, {"notes": LABEL})
    try:
        answers = pulls_while_a_round_is_held_open(held, other)
    finally:
        held.close()
    assert delivered(answers) == {"early", "late"}


def test_a_pull_waits_for_a_round_in_flight_and_pulls_run_beside_each_other(
    services: Callable[[], SyncService], postgres_url: str
) -> None:
    first, second = services(), services()
    first.process(push("device-a", "a", "one"))
    holder = PostgresServerStorage(postgres_url, {"notes": LABEL})
    try:
        with holder.reading(), holder.transaction():  # a pull in progress holds the lock shared
            assert pull(first, 0)[0] == {"a"}  # another pull is not held up by it
            blocked = threading.Thread(target=second.process, args=(push("device-b", "b", "two"),))
            blocked.start()
            blocked.join(0.3)
            assert blocked.is_alive()  # a write waits for the pull to finish
        blocked.join(10)
        assert pull(first, 0)[0] == {"a", "b"}
    finally:
        holder.close()


def test_the_clock_stays_monotonic_across_processes(services: Callable[[], SyncService]) -> None:
    one, two = services(), services()
    stamps = []
    for turn in range(20):
        service = (one, two)[turn % 2]
        answer, _ = service.process(push(f"device-{turn}", f"k{turn}", "x"))
        stamps.append(answer.checkpoint)
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


class _WithoutTheMechanism(PostgresServerStorage):
    """Stamps taken in transactions of their own (committed at once) and no round lock: the naive design."""

    def _take_round_lock(self) -> None:
        pass

    def _advance_clock(self, step: Any) -> int:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            row = connection.execute('SELECT "last" FROM "_sync_clock" WHERE "id" = 0').fetchone()
            assert row is not None
            stamp: int = step(int(row[0]))
            connection.execute('UPDATE "_sync_clock" SET "last" = greatest("last", %s) WHERE "id" = 0', (stamp,))
            return stamp

    def _clock_at_least(self, stamp: int) -> None:
        pass  # would wait on the row lock of the round held open


def test_without_the_mechanism_the_same_scenario_skips_the_late_row(
    services: Callable[[], SyncService], postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = services()
    monkeypatch.setattr(other._storage, "_take_round_lock", lambda: None)  # the other process is naive too
    monkeypatch.setattr(other._storage, "_clock_at_least", lambda stamp: None)
    naive = _WithoutTheMechanism(postgres_url, {"notes": LABEL})
    monkeypatch.setattr(other._storage, "_advance_clock", naive._advance_clock)
    try:
        time.sleep(0.002)  # the naive clock's next stamp is then surely past the held round's
        answers = pulls_while_a_round_is_held_open(naive, other)
    finally:
        naive.close()
    assert "late" not in delivered(answers)  # skipped for good: the checkpoint passed it before it committed

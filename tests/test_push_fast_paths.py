"""The push's fast paths agree with the plain path they shortcut (issue #16).

* A push page collected while the page before it is at the server (``_pending`` with ``following``)
  is the page a plain collection finds once that page is acknowledged.
* The server serving a round that pushed rows reads only rows stored before the round
  (``get_changed_since(until=...)``): its answer and its database are those of reading them all.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk import DatabaseEngine, ModelPayload, SyncManifest, SyncRecord
from client_sdk.engine.pipeline import Collected
from client_sdk.engine.protocols import Cursor
from client_sdk.protocol.wire import RecordError
from client_sdk.sqlite import SqliteSyncStorage
from tests.conftest import NOTES, NOTES_SCHEMA

LABEL = "notes.Note"
keys = st.sampled_from([f"k{i}" for i in range(12)])
bodies = st.text(max_size=6) | st.just(float("inf"))  # inf: a row no node could store, quarantined
writes = st.lists(st.tuples(st.sampled_from(["upsert", "delete"]), keys, bodies), max_size=30)


def client_file(folder: Path, ops: list[tuple[str, str, Any]]) -> Path:
    path = folder / "device.db"
    with closing(sqlite3.connect(path)) as connection:
        connection.executescript(NOTES_SCHEMA)
    SqliteSyncStorage(path, NOTES, node_id="device").close()  # tracked from here on
    with closing(sqlite3.connect(path)) as connection:
        for op, key, body in ops:
            with connection:  # one transaction each: each write its own stamp
                if op == "delete":
                    connection.execute("DELETE FROM notes WHERE id = ?", (key,))
                else:
                    connection.execute("INSERT INTO notes (id, body, pinned) VALUES (?, ?, 0) ON CONFLICT (id) "
                                       "DO UPDATE SET body = excluded.body", (key, body))
    return path


def engine_for(path: Path, batch_size: int, batch_bytes: int | None) -> tuple[SqliteSyncStorage, DatabaseEngine]:
    storage = SqliteSyncStorage(path, NOTES)
    return storage, DatabaseEngine(storage, storage.dependency_graph(), storage.clock, storage.node_id,
                                   batch_size=batch_size, batch_bytes=batch_bytes, transaction=storage.transaction)


def acknowledge(storage: SqliteSyncStorage, collected: Collected) -> None:
    for payload in collected.payloads:
        storage.acknowledge(payload.model_label, {key: record.last_modified for key, record in payload.records.items()},
                            dict(payload.deletes))


def shown(pages: list[Collected], errors: list[RecordError]) -> list[Any]:
    return [[(p.model_label, {k: (r.data, r.timestamps) for k, r in p.records.items()}, p.deletes, c.has_more)
             for p in c.payloads] for c in pages] + [sorted(str(e["key"]) for e in errors)]


def push_pages(storage: SqliteSyncStorage, engine: DatabaseEngine, pipelined: bool) -> list[Any]:
    """Every page a push sends, acknowledging each (as an empty answer does) before the next is sent."""
    unpushed: dict[str, set[str]] = {}
    errors: list[RecordError] = []
    pages = []
    collected = engine._pending(unpushed, errors)
    while collected.payloads:
        pages.append(collected)
        following = None
        if pipelined and collected.has_more:  # collected while this page is at the server
            request = engine._manifest(0, collected.payloads, {}, collected.has_more)
            following = engine._pending(unpushed, errors, (request, collected))
        acknowledge(storage, collected)
        collected = following if following is not None else engine._pending(unpushed, errors)
    return shown(pages, errors)


@settings(max_examples=150, deadline=None)
@given(writes, st.integers(1, 6), st.sampled_from([None, 60, 200]))
def test_a_page_collected_ahead_is_the_page_collected_after_the_acknowledgement(
    ops: list[tuple[str, str, Any]], batch_size: int, batch_bytes: int | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plain_path = client_file(folder, ops)
        ahead_path = folder / "ahead.db"
        shutil.copy(plain_path, ahead_path)
        found = []
        for path, pipelined in ((plain_path, False), (ahead_path, True)):
            storage, engine = engine_for(path, batch_size, batch_bytes)
            found.append(push_pages(storage, engine, pipelined))
            assert storage.pending_count() == len(found[-1][-1])  # only the quarantined rows stay pending
            storage.close()
        assert found[0] == found[1]


class ReadsEverything(SqliteSyncStorage):
    """The plain path: rows stored by the round being served are read (and left out) like any other."""

    def get_changed_since(
        self, label: str, since: int, *, after: Cursor | None = None, limit: int | None = None,
        until: int | None = None,
    ) -> list[tuple[str, SyncRecord]]:
        return super().get_changed_since(label, since, after=after, limit=limit)


TWO_SCHEMA = NOTES_SCHEMA + NOTES_SCHEMA.replace("notes", "tags")
TWO = {**NOTES, "tags": "notes.Tag"}
"""Two models: one may be cut while the other is served whole, and its cursor must then skip the
rows the round stored."""


def server_engine(path: Path, storage_class: type[SqliteSyncStorage], batch_size: int) -> DatabaseEngine:
    storage = storage_class(path, TWO, role="server", node_id="server")
    storage.clock._wall_ms = lambda: 1  # stamps from the stored clock alone: both servers stamp alike
    return DatabaseEngine(storage, storage.dependency_graph(), storage.clock, storage.node_id, batch_size=batch_size,
                          clock_drift_max=None, transaction=storage.transaction)


def push(node: str, stamp: int, records: dict[str, str], deletes: list[str], checkpoint: int) -> SyncManifest:
    payloads = []
    for label, half in (("notes.Note", 0), ("notes.Tag", 1)):
        mine = {key: body for key, body in records.items() if int(key[1:]) % 2 == half}
        payload = ModelPayload(label, {key: SyncRecord(key, {"id": key, "body": body, "pinned": False},
                                                       {"id": stamp, "body": stamp, "pinned": stamp})
                                       for key, body in mine.items()},
                               {key: stamp for key in deletes if key not in records and int(key[1:]) % 2 == half})
        if payload.records or payload.deletes:
            payloads.append(payload)
    return SyncManifest(node, checkpoint, payloads=payloads).seal()


def own_rows_passed(answer: SyncManifest, now: int) -> dict[str, Any]:
    """The answer, but for where a cursor stops among the rows the round itself stored (stamped with
    the server's clock after every row before them): the plain path stops wherever its page of
    reads ended, the fast path past them all, and either way no row the client did not send is
    passed over. (Not the checksum, which covers the cursors.)"""
    shown = answer.to_dict()
    del shown["checksum"]
    shown["after_keys"] = {label: {**cursor, "key": None} if cursor["timestamp"] == now else cursor
                           for label, cursor in shown["after_keys"].items()}
    return shown


rounds = st.lists(st.tuples(st.sampled_from(["a", "b"]), st.dictionaries(keys, st.text(max_size=3), max_size=8),
                            st.lists(keys, max_size=3), st.booleans()), min_size=1, max_size=6)


@settings(max_examples=100, deadline=None)
@given(rounds, st.integers(1, 5))
def test_serving_a_push_without_reading_its_own_rows_back_answers_the_same(
    sequence: list[tuple[str, dict[str, str], list[str], bool]], batch_size: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with closing(sqlite3.connect(folder / "fast.db")) as connection:
            connection.executescript(TWO_SCHEMA)
        SqliteSyncStorage(folder / "fast.db", TWO, role="server", node_id="server").close()  # one clock for both
        shutil.copy(folder / "fast.db", folder / "plain.db")
        fast = server_engine(folder / "fast.db", SqliteSyncStorage, batch_size)
        plain = server_engine(folder / "plain.db", ReadsEverything, batch_size)
        checkpoints = {"a": 0, "b": 0}
        after_keys: dict[str, Any] = {"a": {}, "b": {}}
        for index, (node, records, deletes, from_start) in enumerate(sequence):
            checkpoint = 0 if from_start else checkpoints[node]
            request = push(node, index + 1, records, deletes, checkpoint)
            request.after_keys = {} if from_start else after_keys[node]
            answers = [engine.process(request)[0] for engine in (fast, plain)]
            now = fast.clock.last  # the stamp the round stored its rows with (the same on both)
            assert plain.clock.last == now
            assert own_rows_passed(answers[0], now) == own_rows_passed(answers[1], now)
            answer = answers[0].to_dict()  # the next request goes on from the fast path's cursors
            checkpoints[node], after_keys[node] = answer["checkpoint"], answer["after_keys"]
        for engine in (fast, plain):
            engine.storage.close()  # type: ignore[attr-defined]
        for table in TWO:
            read = [sorted(sqlite3.connect(folder / name).execute(f"SELECT * FROM {table}")) for name in ("fast.db", "plain.db")]
            assert read[0] == read[1]

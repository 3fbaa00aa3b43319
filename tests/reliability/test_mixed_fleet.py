"""A mixed fleet (issue #15): devices that speak exactly the existing clients' dialect share a
server_stub with SDK devices, and everyone converges.

The existing clients' dialect, as ``vectors/reference_quirks.json`` records it: a foreign key's
stamp under the model's field name (``list`` for ``list_id``), the meta fields
``sync_field_timestamps`` and ``sync_field_last_modified`` inside ``data``, and every row and
tombstone newer than the checkpoint pushed again each round (so tombstones are re-sent, and a
push is echoed back).
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from client_sdk import DatabaseEngine, HttpTransport, ModelPayload, SqliteSyncStorage, SyncManifest, SyncRecord
from server_stub import create_app
from tests.engine.harness import LegacyClientEngine
from tests.http.conftest import TASK, TODO_MODELS, TODO_SCHEMA, todo_config
from tests.loopback import serve
from tests.serverdb import Database, server_query


class DialectTransport:
    """Sends each request as the existing clients write it: a Task's ``list_id`` stamp under ``list``,
    and the meta fields inside every record's ``data``."""

    def __init__(self, inner: HttpTransport) -> None:
        self.inner = inner

    def exchange(self, manifest: SyncManifest) -> SyncManifest:
        payloads = [ModelPayload(p.model_label, {key: self._dialect(p.model_label, key, r) for key, r in p.records.items()},
                                 dict(p.deletes)) for p in manifest.payloads]
        spoken = SyncManifest(manifest.node_id, manifest.checkpoint, after_keys=manifest.after_keys,
                              has_more=manifest.has_more, node_time=manifest.node_time, payloads=payloads)
        return self.inner.exchange(spoken.seal())

    @staticmethod
    def _dialect(label: str, key: str, record: SyncRecord) -> SyncRecord:
        stamps = {("list" if label == TASK and name == "list_id" else name): stamp for name, stamp in record.timestamps.items()}
        data = {**record.data, "sync_field_timestamps": dict(stamps), "sync_field_last_modified": max(stamps.values())}
        return SyncRecord(key, data, stamps)


class Device:
    def __init__(self, folder: Path, name: str, base: str, *, dialect: bool) -> None:
        self.name = name
        self.path = folder / f"{name}.db"
        with closing(sqlite3.connect(self.path)) as connection:
            connection.executescript(TODO_SCHEMA)
        self.storage = SqliteSyncStorage(self.path, TODO_MODELS, node_id=name)
        http = HttpTransport(base + "/sync/", retries=0, timeout=10.0)
        self.http = http
        engine_class = LegacyClientEngine if dialect else DatabaseEngine
        self.engine = engine_class(self.storage, self.storage.dependency_graph(), self.storage.clock, name,
                                   transaction=self.storage.transaction, transport=DialectTransport(http) if dialect else http)

    def sql(self, statement: str, *params: Any) -> None:
        with self.storage.connection as connection:
            connection.execute(statement, params)

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        connection = self.storage.connection
        return {table: sorted(connection.execute(f'SELECT * FROM "{table}"').fetchall()) for table in ("TodoList", "Task")}

    def close(self) -> None:
        self.storage.close()
        self.http.close()


def server_rows(database: Database) -> dict[str, list[tuple[Any, ...]]]:
    return {table: sorted(server_query(database, f"SELECT * FROM {table}")) for table in ("TodoList", "Task")}


@pytest.fixture
def base(server_database: Database) -> Iterator[str]:
    """server_stub on the to-do schema, on 127.0.0.1."""
    with serve(create_app(todo_config(server_database))) as url:
        yield url


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_devices_in_the_existing_dialect_and_sdk_devices_converge(base: str, server_database: Database, tmp_path: Path,
                                                                   seed: int) -> None:
    rng = random.Random(seed)
    devices = [Device(tmp_path, f"{kind}-{n}", base, dialect=kind == "django") for kind in ("sdk", "django") for n in (1, 2)]
    home = str(uuid.UUID(int=rng.getrandbits(128)))
    devices[0].sql("INSERT INTO TodoList (id, name) VALUES (?, 'home')", home)
    devices[0].engine.sync()
    for device in devices:
        device.engine.sync()
    try:
        for _ in range(80):
            device = rng.choice(devices)
            tasks = [row[0] for row in device.rows()["Task"]]
            roll = rng.random()
            if roll < 0.35 or not tasks:
                device.sql("INSERT INTO Task (id, list_id, title, done) VALUES (?, ?, ?, 0)",
                           str(uuid.UUID(int=rng.getrandbits(128))), home, f"task {rng.randrange(100)}")
            elif roll < 0.6:
                device.sql("UPDATE Task SET title = ? WHERE id = ?", f"renamed {rng.randrange(100)}", rng.choice(tasks))
            elif roll < 0.75:
                device.sql("UPDATE Task SET done = 1 - done WHERE id = ?", rng.choice(tasks))
            elif roll < 0.85:
                device.sql("DELETE FROM Task WHERE id = ?", rng.choice(tasks))
            else:
                assert device.engine.sync().ok
        for _ in range(2):
            for device in devices:
                assert device.engine.sync().ok
        expected = server_rows(server_database)
        assert expected["TodoList"] and expected["Task"]
        for device in devices:
            assert device.rows() == expected, device.name
    finally:
        for device in devices:
            device.close()

"""Real worlds for the reliability tests: devices are SyncClients on SQLite files, the server is
server_stub under uvicorn on 127.0.0.1 (on a SQLite file or a PostgreSQL database), and every sync
is real HTTP."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from client_sdk import HttpTransport, SyncClient
from server_stub import ServerConfig, create_app
from tests.loopback import serve
from tests.reliability.inflight import HookedTransport
from tests.serverdb import Database, server_query, server_storage

TABLE = "items"
LABEL = "swarm.Item"
SCHEMA = f"CREATE TABLE {TABLE} (id TEXT PRIMARY KEY, title, notes, priority);"
POSTGRES_SCHEMA = f"CREATE TABLE {TABLE} (id TEXT PRIMARY KEY, title JSONB, notes JSONB, priority JSONB);"
"""JSONB takes what the swarm writes (NULL, integers, text) as SQLite's untyped columns do."""
COLUMNS = ("id", "title", "notes", "priority")
MODELS = {TABLE: LABEL}


def server_config(database: Database, **options: Any) -> ServerConfig:
    schema = SCHEMA if isinstance(database, Path) else POSTGRES_SCHEMA
    return ServerConfig(database=database, models=MODELS, schema=schema, node_id="server", **options)


@contextmanager
def running_server(database: Database, **options: Any) -> Iterator[str]:
    """server_stub on ``database`` at a free loopback port; yields the sync URL."""
    with serve(create_app(server_config(database, **options))) as base:
        yield f"{base}/sync/"


def create_device_file(path: Path) -> None:
    connection = sqlite3.connect(path)
    try:
        connection.executescript(f"CREATE TABLE IF NOT EXISTS {TABLE} (id TEXT PRIMARY KEY, title, notes, priority);")
    finally:
        connection.close()


def read_rows(connection: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    cursor = connection.execute(f"SELECT * FROM {TABLE}")
    names = [column[0] for column in cursor.description]
    return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


class SqliteDevice:
    """A device as the swarm sees it: SQL writes on its own file, syncs through HTTP."""

    def __init__(self, folder: Path, name: str, url: str, transport_wrapper=None) -> None:
        self.name = name
        self.path = folder / f"{name}.db"
        create_device_file(self.path)
        transport = HttpTransport(url, retries=0, timeout=10.0)
        self.transport = transport_wrapper(transport) if transport_wrapper else transport
        self.in_flight = HookedTransport(self.transport)
        self.client = SyncClient(self.path, models=MODELS, node_id=name, transport=self.transport)
        self.db = self.client.connection
        self.second_writer = sqlite3.connect(self.path, timeout=30)

    def _writer(self, second: bool) -> sqlite3.Connection:
        return self.second_writer if second else self.db

    def write(self, key: str, values: dict[str, Any], *, second_writer: bool = False) -> None:
        names = ", ".join(values)
        updates = ", ".join(f"{name} = excluded.{name}" for name in values)
        with self._writer(second_writer) as connection:
            connection.execute(
                f"INSERT INTO {TABLE} (id, {names}) VALUES (?, {', '.join('?' for _ in values)}) "
                f"ON CONFLICT (id) DO UPDATE SET {updates}",
                (key, *values.values()),
            )

    def delete(self, key: str, *, second_writer: bool = False) -> None:
        with self._writer(second_writer) as connection:
            connection.execute(f"DELETE FROM {TABLE} WHERE id = ?", (key,))

    def sync(self) -> None:
        self.client.sync()

    def sync_during(self, point: str, write: Callable[[], None]) -> None:
        """A sync through :class:`HookedTransport` (so not pipelined), writing once at ``point``."""
        self.in_flight.at_next_exchange(point, write)
        self.client.engine.transport = self.in_flight
        try:
            self.sync()
        finally:
            self.client.engine.transport = self.transport
            self.in_flight.clear()

    def rows(self) -> dict[str, dict[str, Any]]:
        return read_rows(self.db)

    def stamps(self, key: str) -> dict[str, int]:
        record = self.client.storage.get_records(LABEL, [key]).get(key)
        return dict(record.timestamps) if record else {}

    def tombstone(self, key: str) -> int | None:
        return self.client.storage.get_tombstones(LABEL, [key]).get(key)

    def shift_clock(self, offset_ms: int) -> None:
        """SQLite's triggers read the machine's clock: a per-device jump cannot be faked here
        (the engine-level swarm covers clock jumps)."""

    def close(self) -> None:
        self.second_writer.close()
        self.client.close()


class ServerView:
    """Reads the server's database through a connection of its own, while the server runs."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def rows(self) -> dict[str, dict[str, Any]]:
        selected = server_query(self.database, f"SELECT {', '.join(COLUMNS)} FROM {TABLE}")
        return {row[0]: dict(zip(COLUMNS, row, strict=True)) for row in selected}

    def tombstones(self) -> dict[str, int]:
        with server_storage(server_config(self.database)) as storage:
            return storage.get_deletes_since(LABEL, 0)

"""The server's database side: one SQLite storage and one engine, driven from one dedicated thread.

Everything that touches the engine runs on that thread (``run``), so rounds
are serialized: no two write transactions of this server ever compete,
whatever the number of clients, and the event loop only waits. The storage's
busy timeout covers other processes that open the same file.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from client_sdk.engine.engine import DatabaseEngine
from client_sdk.engine.results import DatabaseResult
from client_sdk.protocol.wire import SyncManifest
from client_sdk.sqlite.storage import SqliteSyncStorage

from .config import ServerConfig

T = TypeVar("T")
PURGE_EVERY = 3600.0
"""Seconds between tombstone purges, when a retention is configured."""

log = logging.getLogger("server_stub")


class SyncService:
    """Opens (and if needed creates) the server database, then answers rounds one at a time."""

    _storage: SqliteSyncStorage
    _engine: DatabaseEngine

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="server-stub-db")
        self._next_purge = 0.0
        try:
            self._worker.submit(self._open).result()
        except BaseException:
            self._worker.shutdown()
            raise
        self.node_id = self._storage.node_id

    async def run(self, work: Callable[[], T]) -> T:
        """``work()`` on the database thread, after every earlier call has finished."""
        return await asyncio.wrap_future(self._worker.submit(work))

    def process(self, manifest: SyncManifest) -> tuple[SyncManifest, DatabaseResult]:
        """One round, on the database thread. The engine runs it in one write transaction with the
        clock's moves inside it: a refused or failed round leaves the database exactly as it was."""
        answer = self._engine.process(manifest)
        self._purge_if_due()
        return answer

    def close(self) -> None:
        self._worker.submit(self._storage.close).result()
        self._worker.shutdown()

    # -- on the database thread --
    def _open(self) -> None:
        create_schema(self.config)
        storage = SqliteSyncStorage(self.config.database, dict(self.config.models), role="server", node_id=self.config.node_id)
        self._engine = DatabaseEngine(
            storage,
            storage.dependency_graph(),
            storage.clock,
            storage.node_id,
            batch_size=self.config.batch_size,
            clock_drift_max=self.config.clock_drift_max,
            transaction=storage.transaction,
        )
        self._storage = storage
        self._purge_if_due()

    def _purge_if_due(self) -> None:
        days = self.config.tombstone_retention_days
        if days is None or time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + PURGE_EVERY
        purged = self._storage.purge_tombstones(retention_seconds=days * 86400.0)
        if purged:
            log.info("purged %d tombstones older than %d days", purged, days)


def create_schema(config: ServerConfig) -> None:
    """Run the configured schema SQL unless every mapped table already exists."""
    if not config.schema.strip():
        return
    connection = sqlite3.connect(config.database)
    try:
        existing = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not set(config.models) <= existing:
            connection.executescript(config.schema)
    finally:
        connection.close()

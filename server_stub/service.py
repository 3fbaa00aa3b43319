"""The server's database side: one storage (SQLite or PostgreSQL, ``backend.py``) and one engine,
answering one round at a time.

Rounds run one after another (``run``), so no two write transactions of this
process ever compete, whatever the number of clients (other processes on the
same database take turns through the storage's own locks). They run on a database
thread of their own, where waiting for another process's lock on the file (the
storage's busy timeout) leaves the event loop free. A small round that finds
that thread idle runs on the event loop itself instead: handing a round over
and back costs about 0.1 ms, as much as answering an idle poll. There it never
waits for SQLite's lock: a round that would is handed to the thread after all,
before anything of it was written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from typing import TypeVar

from client_sdk.engine.engine import DatabaseEngine
from client_sdk.engine.results import DatabaseResult
from client_sdk.errors import DatabaseLockedError
from client_sdk.protocol.wire import SyncManifest

from .backend import ServerBackend, SharesReads, open_backend
from .config import ServerConfig

T = TypeVar("T")
PURGE_EVERY = 3600.0
"""Seconds between tombstone purges, when a retention is configured."""

INLINE_BYTES_MAX = 64 * 1024
"""Requests up to this size (inflated) may run on the event loop: polls and small pushes, whose
rounds take well under a millisecond to a few (a page of records to send is bounded by the server's batch)."""

log = logging.getLogger("server_stub")


class _WouldWait(Exception):
    """A round on the event loop found the database locked by another process; nothing of it was written."""


class SyncService:
    """Opens (and if needed creates) the server database, then answers rounds one at a time."""

    _storage: ServerBackend
    _engine: DatabaseEngine

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="server-stub-db")
        self._next_purge = 0.0
        self._queued = 0
        """Calls handed to the database thread and not finished yet (counted on the event loop)."""
        self._inline = False
        try:
            self._worker.submit(self._open).result()
        except BaseException:
            self._worker.shutdown()
            raise
        self.node_id = self._storage.node_id

    async def run(self, work: Callable[[], T], *, inline: bool = False) -> T:
        """``work()`` after every earlier call has finished: on the database thread, or, if ``inline``
        is allowed and nothing is queued there, right here on the event loop (see the module's doc)."""
        if inline and self._queued == 0 and not self._purge_due():
            try:
                with self._without_waiting():
                    return work()
            except _WouldWait:
                pass
        self._queued += 1
        try:
            return await asyncio.wrap_future(self._worker.submit(work))
        finally:
            self._queued -= 1

    def process(self, manifest: SyncManifest, user: str | None = None) -> tuple[SyncManifest, DatabaseResult]:
        """One round, seeing only ``user``'s rows of the scoped tables (``None``: every row). The engine
        runs it in one write transaction with the clock's moves inside it: a refused or failed round
        leaves the database exactly as it was."""
        storage = self._storage
        reading = storage.reading() if isinstance(storage, SharesReads) and not manifest.change_count else nullcontext()
        try:
            with storage.scoped_to(user), reading:
                answer = self._engine.process(manifest)
        except DatabaseLockedError as exc:
            if self._inline:  # nothing of it committed (process() commits last)
                raise _WouldWait from exc
            raise
        self._purge_if_due()  # never due on the event loop: run() leaves a due purge to the thread
        return answer

    def close(self) -> None:
        self._worker.submit(self._storage.close).result()
        self._worker.shutdown()

    # -- on the event loop --
    @contextmanager
    def _without_waiting(self) -> Iterator[None]:
        self._inline = True
        try:
            with self._storage.failing_on_locks():
                yield
        finally:
            self._inline = False

    def _purge_due(self) -> bool:
        return self.config.tombstone_retention_days is not None and time.monotonic() >= self._next_purge

    # -- on the database thread --
    def _open(self) -> None:
        if self.config.scopes and not self.config.users:
            log.warning("[scopes] is set but no token has a user: every client sees every row of every table")
        storage = open_backend(self.config)
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
        if days is None or not self._purge_due():
            return
        self._next_purge = time.monotonic() + PURGE_EVERY
        purged = self._storage.purge_tombstones(retention_seconds=days * 86400.0)
        if purged:
            log.info("purged %d tombstones older than %d days", purged, days)


def is_lock_error(exc: Exception) -> bool:
    """SQLite found the file locked by another connection (and gave up waiting, if it was to wait)."""
    return isinstance(exc, DatabaseLockedError)

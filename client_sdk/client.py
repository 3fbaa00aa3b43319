"""``SyncClient``: the facade an app embeds. Open a database, write offline, ``sync()`` on reconnect."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import platformdirs
import sqlite_utils

from .autosync import AutoSync
from .conflict.reconciler import PayloadReconciler
from .conflict.types import ConflictResolver
from .engine.base import PhaseCallback, ProgressCallback
from .engine.engine import DatabaseEngine
from .engine.protocols import Transport
from .engine.results import DatabaseResult
from .errors import ConnectionSetupError, InvalidParameterError, RetryExhaustedError
from .events import ClientStatus, SyncChanges, SyncEvents
from .protocol.wire import SyncRecord
from .sqlite.install import check_models
from .sqlite.journal import ConflictRecord, LastSync, SyncJournal
from .sqlite.storage import SqliteSyncStorage
from .transport.http import HttpTransport

TIMEOUT = 5.0
"""``SyncClient``'s default seconds for each network step of a round (connect, each read, each write)."""
RETRIES = 2
"""``SyncClient``'s default number of retries of a round that failed in a way worth retrying."""
RETRY_DELAY = 0.5
"""``SyncClient``'s default seconds before the first retry; each next one waits twice as long."""


class PendingChange(NamedTuple):
    """A local change the server has not acknowledged yet."""

    table: str
    key: str
    kind: str  # "upsert" or "delete"
    last_modified: int


class QuarantinedRow(NamedTuple):
    """A pending row sync does not push: what is wrong with it."""

    table: str
    key: str
    reason: str


class HeldBackRow(NamedTuple):
    """A row received from the server that this database cannot store yet: why not."""

    table: str
    key: str
    reason: str


class SyncClient:
    """An app's synced SQLite database.

    ``models`` maps table name -> model label (``{"tasks": "todo.Task"}``) or
    lists table names (labelled ``<app_name>.<table>``); ``None`` reopens the
    tables the file already tracks. The tables stay ordinary tables: read and
    write them with any SQL, from any connection or process; triggers record
    every change for the next ``sync()``.

    ``connection`` (and ``db``, ``storage``) belong to the app's thread; the
    auto-sync thread works on a connection of its own. A ``transport`` passed
    in is the client's once it is open: ``close()`` closes it.

    ``timeout``, ``retries`` and ``retry_delay`` configure the transport built
    for ``server_url`` (a ``transport`` passed in keeps its own): ``timeout``
    seconds for each network step (connecting, each read and write, not the
    whole round); a round that fails in a way worth retrying (connection
    refused or reset, a timeout, a 5xx) is tried ``retries`` more times,
    ``retry_delay * 2**n`` seconds apart, then ``RetryExhaustedError``.
    The defaults (:data:`TIMEOUT`, :data:`RETRIES`, :data:`RETRY_DELAY`) suit
    an app syncing on reconnect: offline, ``sync()`` fails in about 1.5 s when
    the connection is refused, and within 3 x ``timeout`` + 1.5 s when the
    network swallows packets; a host name that does not resolve, or TLS that
    cannot be set up, fails at once (``ConnectionSetupError``).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        models: Mapping[str, str] | Iterable[str] | None,
        server_url: str | None = None,
        app_name: str = "client-sdk",
        node_id: str | None = None,
        auth_token: str | None = None,
        headers: Mapping[str, str] | None = None,
        resolver: ConflictResolver | None = None,
        batch_size: int = 5000,
        clock_drift_max: int | None = 300,
        transport: Transport | None = None,
        on_phase: PhaseCallback | None = None,
        progress: ProgressCallback | None = None,
        timeout: float = TIMEOUT,
        retries: int = RETRIES,
        retry_delay: float = RETRY_DELAY,
    ) -> None:
        if not isinstance(app_name, str) or not app_name.strip():
            raise InvalidParameterError("app_name must be a non-empty string")
        if transport is not None and server_url is not None:
            raise InvalidParameterError("pass either server_url or transport, not both")
        if transport is not None and (auth_token is not None or headers):
            raise InvalidParameterError("auth_token and headers go with server_url; give them to the transport instead")
        labels = _label_map(models, app_name)
        reconciler = PayloadReconciler(resolver)
        built: HttpTransport | None = None
        if transport is None and server_url is not None:
            transport = built = HttpTransport(server_url, headers=dict(headers or {}), auth_token=auth_token,
                                              retries=retries, retry_delay=retry_delay, timeout=timeout)
        self.app_name = app_name
        self.path = Path(path) if path is not None else default_path(app_name)
        self.transport = transport
        self._owns_transport = True
        self._options: dict[str, Any] = {"resolver": resolver, "batch_size": batch_size,
                                         "clock_drift_max": clock_drift_max, "on_phase": on_phase, "progress": progress}
        self._sync_lock = threading.Lock()
        self._quiet_sync: LastSync | None = None
        self._events = SyncEvents()
        """The last sync, if it moved nothing: such a sync is not journaled, so that it writes nothing."""
        self._auto: AutoSync | None = None
        self._worker: SyncClient | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.storage = SqliteSyncStorage(self.path, labels, role="client", node_id=node_id)
        except BaseException:
            if built is not None:
                built.close()
            raise
        try:
            self.journal = SyncJournal(self.storage.connection)
            if self.storage.labels_from_older_sdk and self.journal.finished_with_errors():
                # the SDK that synced this file refused rows with fields it had no column for, and moved on:
                # fetch those models again once, so that nothing it skipped stays missing
                for label in self.storage.labels_from_older_sdk:
                    self.storage.refetch(label)
            self.engine = DatabaseEngine(
                self.storage,
                self.storage.dependency_graph(),
                self.storage.clock,
                self.storage.node_id,
                batch_size=batch_size,
                clock_drift_max=clock_drift_max,
                lock=self.storage.lock(),
                on_phase=on_phase,
                progress=progress,
                reconciler=reconciler,
                transaction=self.storage.transaction,
                transport=transport,
            )
        except BaseException:
            self.storage.close()
            if built is not None:
                built.close()
            raise

    # -- the app's handles on its data --
    @property
    def db(self) -> sqlite_utils.Database:
        """A ``sqlite_utils.Database`` on ``connection``."""
        return self.storage.db

    @property
    def connection(self) -> sqlite3.Connection:
        """The app's connection to the file (WAL, ``foreign_keys`` on)."""
        return self.storage.connection

    @property
    def node_id(self) -> str:
        """This device's node id, generated on first open and kept in the file."""
        return self.storage.node_id

    @property
    def models(self) -> dict[str, str]:
        """Tracked table -> model label."""
        return {self.storage.table_for(label): label for label in self.storage.labels}

    # -- syncing --
    def sync(self, dry_run: bool = False) -> DatabaseResult:
        """Push what is pending and pull what the server has, in as few rounds as that takes; one sync at a time.

        Changes other writers make while it runs are pushed if a round collects them, else by the
        next sync: it always returns after a bounded number of rounds.

        Raises a :class:`SyncError` (recorded in ``last_sync``) when the server
        is away or refuses; local data stays as it was and nothing is lost.
        ``dry_run`` reports what would move and changes nothing.
        """
        if self.connection.in_transaction:
            raise InvalidParameterError("the connection has an uncommitted transaction: commit it before sync()")
        with self._sync_lock:
            self._syncing(True)
            try:
                return self._sync_and_journal(dry_run)
            finally:
                self._report_changes()
                self._syncing(False)

    def _sync_and_journal(self, dry_run: bool) -> DatabaseResult:
        try:
            self.storage.follow_schema()  # a column added while the app runs is synced from now on
            result = self.engine.sync(dry_run=dry_run)
        except Exception as exc:
            if isinstance(exc, (RetryExhaustedError, ConnectionSetupError)):
                self._events.online = False
            if not dry_run:
                self.journal.record_failure(exc)
            raise
        self._events.online = True
        if dry_run:
            return result
        if result.moved_nothing:  # journaled in memory only: a sync that moves nothing writes nothing
            self._quiet_sync = LastSync(datetime.now(timezone.utc), True, result.summary(), None)
        else:
            self._quiet_sync = None
            self.journal.record_success(result, self._held(result))
            self.storage.purge_tombstones()  # the server has them now: keep the file from growing
        return result

    async def sync_async(self, dry_run: bool = False) -> DatabaseResult:
        """``sync()`` on a worker thread, for an app with an event loop: the loop keeps running meanwhile."""
        return await asyncio.to_thread(self.sync, dry_run)

    # -- what a window listens to --
    def on_change(self, callback: Callable[[SyncChanges], None]) -> Callable[[], None]:
        """Call ``callback(changes)`` after each sync (auto syncs included) that inserted, updated or
        deleted rows here; never for one that changed nothing. It runs on the thread that synced (see
        ``events.py`` for handing it to a GUI's thread). Returns the function that unsubscribes it."""
        self.storage.noting_changes = True
        if self._worker is not None:
            self._worker.storage.noting_changes = True
        return self._events.changes.add(callback)

    def on_status(self, callback: Callable[[ClientStatus], None]) -> Callable[[], None]:
        """Call ``callback(status)`` whenever :meth:`status` changes: a sync starts or ends, the server
        is found reachable or not. It runs on the thread that caused it. Returns the unsubscribe function."""
        return self._events.statuses.add(callback)

    def status(self) -> ClientStatus:
        """Online as last seen, syncing or idle, pending changes, the last sync, rows not pushed or held back."""
        return ClientStatus(online=self._events.online, syncing=self._events.syncing, pending=self.pending_count(),
                            last_sync=self.last_sync, quarantined=len(self.quarantined()), held_back=len(self.held_back()))

    def _syncing(self, running: bool) -> None:
        self._events.syncing = running
        if self._events.statuses:
            self._events.statuses.notify(self.status())

    def _report_changes(self) -> None:
        notes = self.storage.take_changes()
        if not self._events.changes:
            return
        by_table = {self.storage.table_for(label): keys for label, keys in notes.items()}
        changes = SyncChanges(
            inserted={table: sorted(keys.inserted) for table, keys in by_table.items() if keys.inserted},
            updated={table: sorted(keys.updated) for table, keys in by_table.items() if keys.updated},
            deleted={table: sorted(keys.deleted) for table, keys in by_table.items() if keys.deleted},
        )
        if changes:
            self._events.changes.notify(changes)

    def resync(self) -> DatabaseResult:
        """Download everything from the server again, keeping the pending local changes: for a device that
        looks confused (rows missing or stale, a damaged checkpoint), the support answer that loses nothing.

        Resets the checkpoint and the paging cursors to 0, then syncs: every row the server holds is
        pulled and stored again (a row without a pending change takes the server's version), pending
        changes are merged field by field as in any sync and then pushed. Rows the server does not
        hold stay as they are. If the sync fails, the next ``sync()`` finishes the full download.
        """
        if self.connection.in_transaction:
            raise InvalidParameterError("the connection has an uncommitted transaction: commit it before resync()")
        if self.transport is None:
            raise InvalidParameterError("resync needs a server_url or a transport")
        with self._sync_lock:
            self.storage.save_checkpoint(0, {})
        return self.sync()

    def _held(self, result: DatabaseResult) -> dict[tuple[str, str], SyncRecord]:
        """The rows now stored for the keys the conflict log names: they show which side won."""
        wanted: dict[str, set[str]] = {}
        for entry in result.conflict_log:
            wanted.setdefault(entry.conflict.model_label, set()).add(entry.conflict.key)
        return {(label, key): record for label, keys in wanted.items()
                for key, record in self.storage.get_records(label, keys).items()}

    def reachable(self) -> bool:
        """Whether the server answers (transports without a check are assumed reachable)."""
        check: Callable[[], bool] | None = getattr(self.transport, "reachable", None)
        online = self.transport is not None and (check is None or check())
        if online != self._events.online:
            self._events.online = online
            if self._events.statuses:
                self._events.statuses.notify(self.status())
        return online

    def pending_count(self) -> int:
        """How many local changes the server has not acknowledged yet."""
        return self.storage.pending_count()

    def clock_stamp(self) -> int:
        """The file's clock: every write to a tracked table made after this is stamped later."""
        return self.storage.clock.last

    def has_pending_after(self, stamp: int) -> bool:
        """Whether a local change stamped after ``stamp`` waits for the server."""
        return self.storage.has_pending_after(stamp)

    def quarantined(self) -> list[QuarantinedRow]:
        """Pending rows that sync leaves out until the app fixes them: values no node could store
        as they are (a non-finite number, text that is not valid UTF-8, a value the column's type
        does not allow). Each stays pending and goes with the first sync after the fix."""
        return [QuarantinedRow(self.storage.table_for(row["model_label"]), row["key"], row["message"])
                for row in self.engine.unpushable()]

    def held_back(self) -> list[HeldBackRow]:
        """Rows received from the server that this database cannot store yet (a value its column does
        not take, a NOT NULL, CHECK or UNIQUE constraint), with SQLite's reason. Each is kept and
        stored by the first sync after the schema, or the row in the way, changes."""
        return [HeldBackRow(self.storage.table_for(row["model_label"]), row["key"], row["message"])
                for row in self.storage.held_back()]

    def pending_changes(self) -> list[PendingChange]:
        """Local changes not yet acknowledged by the server, oldest first."""
        changes = []
        for label in self.engine.graph.sync_order():
            table = self.storage.table_for(label)
            changes += [PendingChange(table, key, "upsert", record.last_modified)
                        for key, record in self.storage.get_pending(label)]
            changes += [PendingChange(table, key, "delete", stamp)
                        for key, stamp in self.storage.get_pending_deletes(label).items()]
        return sorted(changes, key=lambda change: (change.last_modified, change.key))

    @property
    def last_sync(self) -> LastSync | None:
        """When the last sync finished and how it went; ``None`` before the first. A sync that moved
        nothing writes nothing, so only this client knows of it: other processes read the journal."""
        recorded = self.journal.last_sync()
        quiet = self._quiet_sync
        return quiet if quiet is not None and (recorded is None or quiet.at > recorded.at) else recorded

    def conflicts(self, limit: int | None = None) -> list[ConflictRecord]:
        """The persisted conflict log, newest first."""
        return self.journal.conflicts(limit)

    # -- sync on reconnect --
    def start_auto_sync(
        self,
        interval: float = 30.0,
        *,
        poll: float = 1.0,
        max_backoff: float = 300.0,
        on_result: Callable[[DatabaseResult], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> AutoSync:
        """Sync in a background thread from now on (see :class:`AutoSync`); callbacks run on that thread.

        The thread syncs through its own connection to the file, so the app
        keeps using ``connection`` freely; it shares this client's sync lock,
        so a ``sync()`` called meanwhile waits for the background one.
        """
        if self.transport is None:
            raise InvalidParameterError("auto sync needs a server_url or a transport")
        if self._auto is not None and self._auto.running:
            raise InvalidParameterError("auto sync is already running")
        self.stop_auto_sync()
        worker = self._background_worker()
        try:
            auto = AutoSync(worker, interval=interval, poll=poll, max_backoff=max_backoff,
                            on_result=on_result, on_error=on_error)
        except BaseException:
            worker.close()
            raise
        self._worker, self._auto = worker, auto.start()
        return auto

    def _background_worker(self) -> SyncClient:
        """A client on a connection of its own to the same file, sharing this one's transport and sync lock."""
        worker = SyncClient(self.path, models=self.models, app_name=self.app_name, transport=self.transport,
                            **self._options)
        worker._owns_transport = False
        worker._sync_lock = self._sync_lock
        worker._events = self._events
        worker.storage.noting_changes = self.storage.noting_changes
        return worker

    def stop_auto_sync(self) -> None:
        """Stop the background thread (a sync in progress finishes first) and close its connection."""
        if self._auto is not None:
            self._auto.stop()
            self._auto = None
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    # -- lifetime --
    def close(self) -> None:
        """Stop auto sync and close the transport and the database; the file is free afterwards."""
        self.stop_auto_sync()
        close_transport = getattr(self.transport, "close", None)
        if self._owns_transport and callable(close_transport):
            close_transport()
        self.storage.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def default_path(app_name: str) -> Path:
    """Where an app's database lives when no path is given: its platform user-data folder."""
    return Path(platformdirs.user_data_dir(app_name, appauthor=False)) / f"{app_name}.db"


def _label_map(models: Mapping[str, str] | Iterable[str] | None, app_name: str) -> dict[str, str] | None:
    if models is None:
        return None
    if isinstance(models, str):
        raise InvalidParameterError("models must map table -> model label, or list table names")
    mapping = dict(models) if isinstance(models, Mapping) else {table: f"{app_name}.{table}" for table in models}
    check_models(mapping)  # before the file is touched
    return mapping

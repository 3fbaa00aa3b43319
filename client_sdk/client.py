"""``SyncClient``: the facade an app embeds. Open a database, write offline, ``sync()`` on reconnect."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

import platformdirs
import sqlite_utils

from .autosync import AutoSync
from .conflict.reconciler import PayloadReconciler
from .conflict.types import ConflictResolver
from .engine.engine import DatabaseEngine, PhaseCallback, ProgressCallback
from .engine.protocols import Transport
from .engine.results import DatabaseResult
from .errors import InvalidParameterError
from .sqlite.journal import ConflictRecord, LastSync, SyncJournal
from .sqlite.storage import SqliteSyncStorage
from .transport.http import HttpTransport


class PendingChange(NamedTuple):
    """A local change the server has not acknowledged yet."""

    table: str
    key: str
    kind: str  # "upsert" or "delete"
    last_modified: int


class SyncClient:
    """An app's synced SQLite database.

    ``models`` maps table name -> model label (``{"tasks": "todo.Task"}``) or
    lists table names (labelled ``<app_name>.<table>``); ``None`` reopens the
    tables the file already tracks. The tables stay
    ordinary tables: read and write them with any SQL, from any connection or
    process; triggers record every change for the next ``sync()``.
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
        batch_size: int = 1000,
        clock_drift_max: int | None = 300,
        transport: Transport | None = None,
        on_phase: PhaseCallback | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        if not isinstance(app_name, str) or not app_name.strip():
            raise InvalidParameterError("app_name must be a non-empty string")
        if transport is not None and server_url is not None:
            raise InvalidParameterError("pass either server_url or transport, not both")
        self.app_name = app_name
        self.path = Path(path) if path is not None else default_path(app_name)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.storage = SqliteSyncStorage(self.path, _label_map(models, app_name), role="client", node_id=node_id)
        self.journal = SyncJournal(self.storage.connection)
        self.transport = transport if transport is not None else (
            HttpTransport(server_url, headers=dict(headers or {}), auth_token=auth_token) if server_url else None
        )
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
            reconciler=PayloadReconciler(resolver),
            transaction=self.storage.transaction,
            transport=self.transport,
        )
        self._sync_lock = threading.Lock()
        self._auto: AutoSync | None = None

    # -- the app's handles on its data --
    @property
    def db(self) -> sqlite_utils.Database:
        return self.storage.db

    @property
    def connection(self):  # -> sqlite3.Connection
        return self.storage.connection

    @property
    def node_id(self) -> str:
        return self.storage.node_id

    # -- syncing --
    def sync(self, dry_run: bool = False) -> DatabaseResult:
        """Exchange changes with the server until both sides are quiet; one sync at a time."""
        with self._sync_lock:
            try:
                result = self.engine.sync(dry_run=dry_run)
            except Exception as exc:
                if not dry_run:
                    self.journal.record_failure(exc)
                raise
            if not dry_run:
                self.journal.record_success(result)
            return result

    def reachable(self) -> bool:
        """Whether the server answers (transports without a check are assumed reachable)."""
        check: Callable[[], bool] | None = getattr(self.transport, "reachable", None)
        return self.transport is not None and (check is None or check())

    def pending_count(self) -> int:
        return self.storage.pending_count()

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
        return self.journal.last_sync()

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
        if self.transport is None:
            raise InvalidParameterError("auto sync needs a server_url or a transport")
        if self._auto is not None and self._auto.running:
            raise InvalidParameterError("auto sync is already running")
        self._auto = AutoSync(self, interval=interval, poll=poll, max_backoff=max_backoff,
                              on_result=on_result, on_error=on_error).start()
        return self._auto

    def stop_auto_sync(self) -> None:
        if self._auto is not None:
            self._auto.stop()
            self._auto = None

    # -- lifetime --
    def close(self) -> None:
        self.stop_auto_sync()
        close_transport = getattr(self.transport, "close", None)
        if callable(close_transport):
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
    if isinstance(models, Mapping):
        mapping = dict(models)
    else:
        mapping = {table: f"{app_name}.{table}" for table in models}
    if not mapping:
        raise InvalidParameterError("models must name at least one table")
    for table, label in mapping.items():
        if not isinstance(table, str) or not table or not isinstance(label, str) or not label:
            raise InvalidParameterError(f"bad model entry {table!r}: {label!r}")
    return mapping

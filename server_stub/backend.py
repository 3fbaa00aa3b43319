"""The server-storage contract ``SyncService`` runs on, and opening the one the config names.

Both backends are the engine's :class:`ServerStorage` (rows, tombstones and what
changed since a checkpoint) plus what a server process needs around it: its node
id and clock, the dependency order, transactions, scoped requests, purging.
SQLite (a path): :class:`SqliteSyncStorage` in its server role, one file. PostgreSQL
(a ``postgresql://`` URL): :class:`PostgresServerStorage`, shared by any number of
server processes.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable

from client_sdk.engine.protocols import ServerStorage
from client_sdk.protocol.graph import DependencyGraph
from client_sdk.protocol.hlc import HybridLogicalClock
from client_sdk.sqlite.storage import SqliteSyncStorage

from .config import ServerConfig
from .schema import create_schema


class ServerBackend(ServerStorage, Protocol):
    node_id: str
    clock: HybridLogicalClock

    def dependency_graph(self) -> DependencyGraph: ...

    def transaction(self) -> AbstractContextManager[None]: ...

    def scoped_to(self, user: str | None) -> AbstractContextManager[None]:
        """The block's requests are answered for ``user`` (None: every row)."""
        ...

    def failing_on_locks(self) -> AbstractContextManager[None]:
        """Within the block, a lock held by another connection fails at once instead of waiting."""
        ...

    def purge_tombstones(self, *, retention_seconds: float | None = None) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class SharesReads(Protocol):
    """A backend whose rounds that only read may run beside each other (several server processes)."""

    def reading(self) -> AbstractContextManager[None]: ...


def open_backend(config: ServerConfig) -> ServerBackend:
    """The storage ``config.database`` names, its schema created or brought up to date first."""
    models, scopes = dict(config.models), dict(config.scopes)
    if isinstance(config.database, Path):
        create_schema(config)
        return SqliteSyncStorage(config.database, models, role="server", node_id=config.node_id, scopes=scopes)
    from .postgres.storage import PostgresServerStorage  # psycopg is an optional extra

    return PostgresServerStorage(config.database, models, node_id=config.node_id, scopes=scopes, schema=config.schema)

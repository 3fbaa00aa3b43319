"""``DatabaseEngine``: one node's sync engine, the server's ``process`` and the client's ``sync``.

Written against the storage, lock and transport protocols only (``protocols.py``);
it knows nothing of SQLite or HTTP. The server side lives in ``serve.py``, the
client side in ``rounds.py``, what they share in ``base.py``, and the record
checks that need no storage in ``checks.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from ..conflict.reconciler import PayloadReconciler
from ..errors import require
from ..protocol.graph import DependencyGraph
from ..protocol.hlc import HybridLogicalClock
from ..protocol.limits import MiB
from .base import PhaseCallback, ProgressCallback
from .options import EngineOptions
from .protocols import ClientStorage, ServerStorage, SyncLock, Transport
from .results import DatabaseResult
from .rounds import Syncing
from .serve import Serving


class DatabaseEngine(Serving, Syncing):
    """One node's sync engine: ``sync()`` as a client, ``process()`` as a server.

    ``storage`` must be a :class:`ServerStorage` to ``process`` and a
    :class:`ClientStorage` to ``sync`` (a :class:`DatabaseSyncStorage` is both).
    The keyword arguments after ``node_id`` are the documented API's; the page
    sizes and limits among them are kept, checked, in ``options``
    (:class:`EngineOptions`).
    """

    def __init__(
        self,
        storage: Any,
        graph: DependencyGraph,
        clock: HybridLogicalClock,
        node_id: str,
        *,
        batch_bytes: int | None = 16 * MiB,
        batch_size: int | None = None,
        clock_drift_max: int | None = 300,
        identity_field: str = "id",
        lock: SyncLock | None = None,
        on_complete: Callable[[DatabaseResult], None] | None = None,
        on_phase: PhaseCallback | None = None,
        payload_bytes_max: int | None = None,
        payload_records_max: int | None = None,
        progress: ProgressCallback | None = None,
        reconciler: PayloadReconciler | None = None,
        transaction: Callable[[], AbstractContextManager[Any]] = nullcontext,
        transport: Transport | None = None,
        max_rounds: int = 10_000,
    ) -> None:
        require(isinstance(storage, (ServerStorage, ClientStorage)),
                "storage must implement ServerStorage or ClientStorage (DatabaseSyncStorage is both)")
        require(isinstance(graph, DependencyGraph), "graph must be a DependencyGraph")
        require(isinstance(clock, HybridLogicalClock), "clock must be a HybridLogicalClock")
        require(isinstance(node_id, str) and bool(node_id), "node_id must be a non-empty string")
        require(lock is None or isinstance(lock, SyncLock), "lock must implement SyncLock (acquire, hold, release, update_phase)")
        for name, callback in (("on_complete", on_complete), ("on_phase", on_phase), ("progress", progress),
                               ("transaction", transaction)):
            require(callback is None or callable(callback), f"{name} must be callable")
        require(reconciler is None or isinstance(reconciler, PayloadReconciler), "reconciler must be a PayloadReconciler")
        require(transport is None or callable(getattr(transport, "exchange", None)), "transport must have exchange(manifest)")
        self.options = EngineOptions(
            batch_bytes=batch_bytes, batch_size=batch_size, clock_drift_max=clock_drift_max,
            identity_field=identity_field, payload_bytes_max=payload_bytes_max,
            payload_records_max=payload_records_max, max_rounds=max_rounds,
        )
        self.storage = storage
        self.graph = graph
        self.clock = clock
        self.node_id = node_id
        self.lock = lock
        self.on_complete = on_complete
        self.on_phase = on_phase
        self.progress = progress
        self.reconciler = reconciler or PayloadReconciler()
        self.transaction = transaction
        self.transport = transport
        self._order = graph.sync_order()

"""A small world for engine tests: one server engine, client nodes on in-memory storage, in-process transport."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field

from client_sdk import DatabaseEngine, DependencyGraph, HybridLogicalClock, MemoryStorage, SyncManifest
from client_sdk.protocol.hlc import MemoryClockState
from client_sdk.transport.inprocess import InProcessTransport

LIST = "todo.TodoList"
TASK = "todo.Task"
GRAPH = {LIST: set(), TASK: {LIST}}


class Wall:
    """A settable wall clock (unix ms) shared by the nodes that read it."""

    def __init__(self, ms: int = 1_795_000_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, ms: int = 1) -> None:
        self.ms += ms


@dataclass
class Recorder:
    """Wraps an in-process transport and keeps every request and response that crossed it."""

    inner: object
    requests: list[SyncManifest] = field(default_factory=list)
    responses: list[SyncManifest] = field(default_factory=list)

    def exchange(self, manifest: SyncManifest) -> SyncManifest:
        return self.decode(self.send(manifest))

    # a ByteTransport like the InProcessTransport it wraps: pulls are pipelined as without it
    def send(self, manifest: SyncManifest) -> bytes:
        self.requests.append(manifest)
        return self.inner.send(manifest)  # type: ignore[attr-defined]

    def decode(self, body: bytes) -> SyncManifest:
        response = self.inner.decode(body)  # type: ignore[attr-defined]
        self.responses.append(response)
        return response

    def counts(self, direction: str, label: str) -> Counter[str]:
        manifests = self.requests if direction == "push" else self.responses
        seen: Counter[str] = Counter()
        for manifest in manifests:
            payload = manifest.payload(label)
            if payload is not None:
                seen.update(list(payload.records))
                seen.update(list(payload.deletes))
        return seen

    def reset(self) -> None:
        self.requests.clear()
        self.responses.clear()


class LegacyServerEngine(DatabaseEngine):
    """Answers with the checkpoint rule of PROTOCOL.md 7.4 verbatim, as the existing server does:
    the old checkpoint when the round carried activity, its clock only on a quiet round."""

    def _response_checkpoint(self, incoming, payloads, has_more, activity, now):  # type: ignore[override]
        checkpoint = max([incoming.checkpoint, *(p.max_stamp() for p in payloads)])
        if not has_more and not activity:
            checkpoint = max(checkpoint, now)
        return checkpoint


class LegacyServerStorage(MemoryStorage):
    """Stamps the deletes it stores with the server's clock, as the existing server does (PROTOCOL.md 7.5)."""

    def delete_many(self, label, deletes, *, received_at=None, guard=True):  # type: ignore[override]
        if received_at is not None:
            deletes = dict.fromkeys(deletes, received_at)
        return super().delete_many(label, deletes, received_at=received_at, guard=guard)


def make_server(wall: Wall | None = None, engine_class: type[DatabaseEngine] = DatabaseEngine, **options) -> DatabaseEngine:
    clock = HybridLogicalClock(MemoryClockState(), wall_ms=wall or Wall())
    storage = (LegacyServerStorage if issubclass(engine_class, LegacyServerEngine) else MemoryStorage)(GRAPH, clock)
    return engine_class(storage, DependencyGraph(GRAPH), clock, "server", transaction=storage.transaction, **options)


def make_client(server: DatabaseEngine, name: str | None = None, wall: Wall | None = None, **options) -> DatabaseEngine:
    clock = HybridLogicalClock(MemoryClockState(), wall_ms=wall or Wall())
    storage = MemoryStorage(GRAPH, clock)
    transport = Recorder(InProcessTransport(server))
    return DatabaseEngine(storage, DependencyGraph(GRAPH), clock, name or f"node-{uuid.uuid4().hex[:8]}",
                          transaction=storage.transaction, transport=transport, **options)


def new_key() -> str:
    return str(uuid.uuid4())


class LegacyClientEngine(DatabaseEngine):
    """Collects as the existing client does: every row and tombstone newer than its checkpoint,
    whether or not the server already acknowledged it."""

    def _collect(self, checkpoint, after_keys, held_back, errors=None):  # type: ignore[override]
        from client_sdk import ModelPayload

        payloads = []
        for label in self._order:
            records = dict(self.storage.get_changed_since(label, checkpoint))
            deletes = self.storage.get_deletes_since(label, checkpoint)
            if records or deletes:
                payloads.append(ModelPayload(label, records, deletes))
        return self._manifest(checkpoint, payloads, after_keys, False)


def make_legacy_client(server: DatabaseEngine, name: str, **options) -> DatabaseEngine:
    clock = HybridLogicalClock(MemoryClockState(), wall_ms=Wall())
    storage = MemoryStorage(GRAPH, clock)
    return LegacyClientEngine(storage, DependencyGraph(GRAPH), clock, name, transaction=storage.transaction,
                              transport=Recorder(InProcessTransport(server)), **options)

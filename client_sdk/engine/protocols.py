"""The three seams of the engine: storage, lock and transport.

The engine is written against these protocols only; it knows nothing of
SQLite or HTTP. A node is either a *client* (it pushes its own pending
changes and pulls the server's) or a *server* (it answers ``process``); one
storage class may serve both roles.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ..protocol.wire import AfterKeys, RecordError, SyncManifest, SyncRecord, WireCursor
from .results import DatabaseResult, SyncPhase, SyncStatus


class Cursor(NamedTuple):
    """A position in (last_modified, key) order: rows strictly after it come next."""

    timestamp: int
    key: str

    @classmethod
    def from_wire(cls, raw: WireCursor) -> Cursor:
        return cls(raw["timestamp"], raw["key"])

    def to_wire(self) -> WireCursor:
        return {"key": self.key, "timestamp": self.timestamp}


@runtime_checkable
class RowStorage(Protocol):
    """Rows with their stamps, and tombstones: what both roles read and write.

    Every method is keyed by model label. Writes made through these protocols
    are sync's own: they store the stamps they are given and never count as
    local changes. ``upsert_many`` and ``delete_many`` return the keys they
    skipped because of the staleness guard (PROTOCOL.md 7.6).
    """

    def get_records(self, label: str, keys: Iterable[str]) -> dict[str, SyncRecord]:
        """The stored rows among ``keys`` (missing keys are absent)."""
        ...

    def get_tombstones(self, label: str, keys: Iterable[str]) -> dict[str, int]:
        """The tombstones among ``keys``: key -> the delete's own stamp."""
        ...

    def upsert_many(
        self, label: str, records: dict[str, SyncRecord], *, received_at: int | None = None, guard: bool = True
    ) -> list[str]:
        """Store whole records with their stamps. With ``guard``, a stored row whose
        last_modified is newer than the incoming record's is kept and its key returned."""
        ...

    def delete_many(
        self, label: str, deletes: dict[str, int], *, received_at: int | None = None, guard: bool = True
    ) -> list[str]:
        """Delete rows and keep tombstones stamped as given (each delete's own stamp); with
        ``received_at`` (a server storing them), they are delivered from then on and keep the
        row they erased (see :meth:`get_buried`). With ``guard``,
        a row modified after the tombstone is kept and its key returned."""
        ...


@runtime_checkable
class ServerStorage(RowStorage, Protocol):
    """A server's storage: what changed since a checkpoint, in delivery order, and what deletes erased."""

    def get_changed_since(
        self, label: str, since: int, *, after: Cursor | None = None, limit: int | None = None,
        until: int | None = None,
    ) -> list[tuple[str, SyncRecord]]:
        """Rows with last_modified > ``since`` (or after ``after``) and at or before ``until``, in
        (last_modified, key) order."""
        ...

    def get_deletes_since(self, label: str, since: int, *, until: int | None = None) -> dict[str, int]:
        """Tombstones delivered after ``since`` (and at or before ``until``): key -> the delete's own stamp.

        A tombstone's place in delivery order is when it was stored, as ``received_at`` is for
        a row; the stamp returned, sent on the wire and compared with writes, is the delete's own."""
        ...

    def get_buried(self, label: str, keys: Iterable[str]) -> dict[str, SyncRecord]:
        """What the deletes among ``keys`` erased, where a server kept it (``delete_many`` with
        ``received_at``): the row's last values and stamps, for ``join_fields``."""
        ...

    def keep_buried(self, label: str, records: dict[str, SyncRecord]) -> None:
        """Replace what the tombstones of ``records``' keys keep (an edit older than the delete, joined in)."""
        ...


@runtime_checkable
class ClientStorage(RowStorage, Protocol):
    """A client's storage: its local changes not yet acknowledged by the server, and its sync state."""

    def get_pending(self, label: str, *, after: Cursor | None = None, limit: int | None = None) -> list[tuple[str, SyncRecord]]:
        """Locally changed rows not yet acknowledged, in (last_modified, key) order."""
        ...

    def get_pending_deletes(self, label: str) -> dict[str, int]:
        """Local deletes not yet acknowledged: key -> delete stamp."""
        ...

    def get_pending_keys(self, label: str, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` have a pending local change (row or tombstone)."""
        ...

    def has_pending_after(self, stamp: int) -> bool:
        """Whether a local change (row or tombstone) stamped after ``stamp`` is pending."""
        ...

    def acknowledge(self, label: str, records: dict[str, int], deletes: dict[str, int]) -> None:
        """The server accepted these (key -> last_modified sent, key -> tombstone sent):
        clear their pending mark unless they changed again since."""
        ...

    def mark_pending(self, label: str, keys: Iterable[str]) -> None:
        """Keep these rows pending: a merge kept local changes the server has not seen."""
        ...

    def get_checkpoint(self) -> int: ...

    def save_checkpoint(self, checkpoint: int, after_keys: AfterKeys | None = None) -> None:
        """Store the checkpoint and the server's pagination cursors, atomically."""
        ...

    def get_after_keys(self) -> AfterKeys: ...


@runtime_checkable
class DatabaseSyncStorage(ServerStorage, ClientStorage, Protocol):
    """Both roles in one storage (as :class:`SqliteSyncStorage` and :class:`MemoryStorage` are)."""


class ReferenceViolation(NamedTuple):
    """A row whose FOREIGN KEY names a row that does not exist."""

    label: str
    key: str
    parent_label: str | None
    parent_key: Any


@runtime_checkable
class KnowsFields(Protocol):
    """A storage that knows each model's fields."""

    keeps_unknown_fields: bool
    """False: a record may carry no other fields (a server refuses it). True: the storage keeps the
    fields it has no column for beside the row, with their stamps, and reads them back with it (a
    device on an older schema than its peers)."""

    def fields(self, label: str) -> frozenset[str]: ...

    def stamp_aliases(self, label: str) -> dict[str, str]:
        """Other names a peer may stamp a field under -> that field: a foreign key's model field
        name (``list``) for its column (``list_id``), as the existing server's clients stamp it."""
        ...


@runtime_checkable
class HoldsBack(Protocol):
    """A client storage that holds back received records it cannot store yet (a value its column
    does not take, a constraint its table refuses) until they apply. ``upsert_many`` holds back
    the records its table refuses itself, and returns their keys among the ones it skipped."""

    def hold(self, label: str, records: Mapping[str, tuple[SyncRecord, str]]) -> None:
        """Hold back ``records`` (key -> (record, why it cannot be stored)), replacing what was held for their keys."""
        ...

    def held_records(self, label: str) -> dict[str, SyncRecord]:
        """The records held back for ``label``, to try again."""
        ...

    def held_back(self) -> list[RecordError]:
        """Every record held back, with why: ``{"model_label", "key", "message"}`` each."""
        ...


@runtime_checkable
class ChecksScope(Protocol):
    """A server storage that answers each request for one user, who may see and change only some rows."""

    def hidden(self, label: str, keys: Iterable[str]) -> set[str]:
        """Of ``keys``, those whose row exists and is not the user's to see or change."""
        ...

    def outside_scope(self, label: str, keys: Iterable[str]) -> set[str]:
        """Of ``keys`` (rows just written, inside the round's transaction), those the user may not see now."""
        ...

    def departed(self, label: str, keys: Iterable[str]) -> dict[str, int]:
        """Of ``keys``, the rows that left the user's view: key -> the delete the user's devices were sent."""
        ...


@runtime_checkable
class ChecksValues(Protocol):
    """A storage that can tell which records hold a value their column cannot take."""

    def invalid_values(self, label: str, records: Mapping[str, SyncRecord]) -> dict[str, str]:
        """key -> what is wrong, naming the fields."""
        ...


@runtime_checkable
class ChecksReferences(Protocol):
    """A storage that can find FOREIGN KEYs a round left pointing at nothing (inside its transaction)."""

    def reference_violations(
        self, written: Mapping[str, Collection[str]], deleted: Mapping[str, Collection[str]]
    ) -> list[ReferenceViolation]:
        """Rows that refer to a missing row after ``written`` were stored and ``deleted`` removed (label -> keys)."""
        ...


@runtime_checkable
class FindsReferrers(Protocol):
    """A client storage that can find the rows referring to rows about to be deleted (inside the round's transaction)."""

    def referrers(self, label: str, keys: Collection[str], *, pending: bool) -> list[ReferenceViolation]:
        """Rows whose FOREIGN KEY names one of the stored rows ``keys`` of ``label``, only those with a
        pending local change if ``pending``: (label, key, parent label, parent key) each."""
        ...


@runtime_checkable
class SyncLock(Protocol):
    """Stops two syncs of one node from running at once.

    A client's sync is a session: ``session_id = lock.acquire(node_id)``, then
    ``lock.update_phase(session_id, phase)`` at each phase, and
    ``lock.release(session_id, status, result)`` at the end, however it ended.
    A server's ``process`` calls ``lock.hold(node_id)`` inside its transaction
    instead: the lock is then held until that transaction ends.
    """

    def acquire(self, node_id: str) -> str:
        """Start a sync session for ``node_id`` and return its id, or raise :class:`LockContentionError`
        at once if another sync holds the lock."""
        ...

    def hold(self, node_id: str) -> None:
        """Hold the lock for ``node_id`` until the caller's transaction ends (waiting for it if need be)."""
        ...

    def release(self, session_id: str, status: SyncStatus, result: DatabaseResult | None = None) -> None:
        """End the session, with how it ended; a session that no longer holds the lock leaves it alone."""
        ...

    def update_phase(self, session_id: str, phase: SyncPhase) -> None:
        """Record the session's phase (visible to whoever finds the lock taken); raise
        :class:`LockContentionError` if the session no longer holds the lock."""
        ...


@runtime_checkable
class Transport(Protocol):
    """Carries one round: the client's manifest out, the server's manifest back."""

    def exchange(self, manifest: SyncManifest) -> SyncManifest: ...


@runtime_checkable
class ByteTransport(Transport, Protocol):
    """A transport that can also hand over an answer undecoded: ``exchange(m)`` is ``decode(send(m))``.

    A client paging through a pull then requests the next page as soon as an
    answer arrives, and decodes the answer on its own thread.
    """

    def send(self, manifest: SyncManifest) -> bytes: ...

    def decode(self, body: bytes) -> SyncManifest: ...

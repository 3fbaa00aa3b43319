"""The sync journal kept beside the data: the last sync's outcome and the conflict log."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import wraps
from typing import Any, Concatenate, ParamSpec, TypeVar

from ..conflict.reconciler import ConflictEntry
from ..conflict.types import FieldConflict
from ..engine.results import DatabaseResult
from ..protocol.wire import SyncRecord
from .failures import storage_errors

_SCHEMA = """
CREATE TABLE IF NOT EXISTS "_sync_runs" (
    "id" INTEGER PRIMARY KEY,
    "finished_at" TEXT NOT NULL,
    "ok" INTEGER NOT NULL,
    "summary" TEXT NOT NULL,
    "error" TEXT
);
CREATE TABLE IF NOT EXISTS "_sync_conflicts" (
    "id" INTEGER PRIMARY KEY,
    "at" TEXT NOT NULL,
    "model_label" TEXT NOT NULL,
    "key" TEXT NOT NULL,
    "conflict_type" TEXT NOT NULL,
    "fields" TEXT NOT NULL,
    "winner" TEXT NOT NULL
);
"""

RUNS_KEPT = 100

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _mapped(method: Callable[Concatenate[SyncJournal, _P], _R]) -> Callable[Concatenate[SyncJournal, _P], _R]:
    @wraps(method)
    def wrapper(self: SyncJournal, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with storage_errors(self.connection):
            return method(self, *args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class LastSync:
    """When the last sync finished and how it went."""

    at: datetime
    ok: bool
    summary: dict[str, int]
    error: str | None


@dataclass(frozen=True)
class ConflictRecord:
    """One entry of the persisted conflict log.

    ``fields`` maps each clashing field to ``{"local": ..., "remote": ...,
    "winner": ...}``: the winner is the side (``local`` or ``remote``) whose
    value the row held once the sync was done, or the resolver's choice if it
    held neither. ``winner`` is the record's: the one side
    that won every field, ``merged`` when the fields went different ways, or,
    for a conflict without field clashes (a delete against a modify), the
    resolver's choice (``local``, ``remote`` or ``merged``).
    """

    at: datetime
    model_label: str
    key: str
    conflict_type: str
    fields: dict[str, dict[str, Any]]
    winner: str


class SyncJournal:
    """Reads and writes the journal tables through one connection (SQLite's errors leave as :class:`StorageError`)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        with storage_errors(connection):
            connection.executescript(_SCHEMA)

    @_mapped
    def record_success(self, result: DatabaseResult, held: Mapping[tuple[str, str], SyncRecord]) -> None:
        """Log a finished sync and its conflicts. ``held``: (label, key) -> the row stored after the sync."""
        rows = [
            self._conflict_row(entry, held.get((entry.conflict.model_label, entry.conflict.key)))
            for entry in result.conflict_log
        ]
        with self.connection:
            self._record_run(ok=result.ok, summary=result.summary(), error=None)
            self.connection.executemany(
                'INSERT INTO "_sync_conflicts" ("at", "model_label", "key", "conflict_type", "fields", "winner") '
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    @_mapped
    def record_failure(self, error: BaseException) -> None:
        with self.connection:
            self._record_run(ok=False, summary={}, error=f"{type(error).__name__}: {error}")

    @_mapped
    def finished_with_errors(self) -> bool:
        """Whether a sync still in the journal finished with records refused."""
        found: int = self.connection.execute(
            'SELECT EXISTS (SELECT 1 FROM "_sync_runs" WHERE NOT "ok" AND "error" IS NULL)').fetchone()[0]
        return found == 1

    @_mapped
    def last_sync(self) -> LastSync | None:
        row = self.connection.execute(
            'SELECT "finished_at", "ok", "summary", "error" FROM "_sync_runs" ORDER BY "id" DESC LIMIT 1'
        ).fetchone()
        if row is None:
            return None
        return LastSync(datetime.fromisoformat(row[0]), bool(row[1]), json.loads(row[2]), row[3])

    @_mapped
    def conflicts(self, limit: int | None = None) -> list[ConflictRecord]:
        rows = self.connection.execute(
            'SELECT "at", "model_label", "key", "conflict_type", "fields", "winner" FROM "_sync_conflicts" '
            'ORDER BY "id" DESC LIMIT ?',
            (-1 if limit is None else limit,),
        ).fetchall()
        return [ConflictRecord(datetime.fromisoformat(r[0]), r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]

    def _record_run(self, *, ok: bool, summary: dict[str, int], error: str | None) -> None:
        """One run row, keeping the last ``RUNS_KEPT``; the caller commits."""
        self.connection.execute(
            'INSERT INTO "_sync_runs" ("finished_at", "ok", "summary", "error") VALUES (?, ?, ?, ?)',
            (_now(), int(ok), json.dumps(summary), error),
        )
        self.connection.execute(
            'DELETE FROM "_sync_runs" WHERE "id" <= (SELECT MAX("id") FROM "_sync_runs") - ?', (RUNS_KEPT,)
        )

    @staticmethod
    def _conflict_row(entry: ConflictEntry, held: SyncRecord | None) -> tuple[str, str, str, str, str, str]:
        conflict = entry.conflict
        source = entry.resolution_source.value
        fields = {
            clash.field_name: {"local": clash.local_value, "remote": clash.remote_value,
                               "winner": _field_winner(clash, held, source)}
            for clash in conflict.field_conflicts
        }
        winners = {sides["winner"] for sides in fields.values()}
        winner = winners.pop() if len(winners) == 1 else "merged" if winners else source
        return (_now(), conflict.model_label, conflict.key, conflict.conflict_type.value,
                json.dumps(fields, default=str), winner)


def _field_winner(clash: FieldConflict, held: SyncRecord | None, source: str) -> str:
    """The side whose value the row holds now; the resolver's choice when the row is gone or holds neither."""
    if held is not None and clash.field_name in held.data:
        value = held.data[clash.field_name]
        for side, candidate in (("remote", clash.remote_value), ("local", clash.local_value)):
            if value == candidate and type(value) is type(candidate):
                return side
    return source


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()

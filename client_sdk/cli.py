"""The ``client-sdk`` command: look at a synced database, sync it, read its conflict log."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from .client import HeldBackRow, QuarantinedRow, SyncClient
from .engine.results import KEY_LISTS, DatabaseResult, SyncPhase, SyncStage
from .errors import StorageError, SyncError
from .transport.http import HttpTransport

TOKEN_VARIABLE = "CLIENT_SDK_TOKEN"
"""The environment variable ``sync`` and ``resync`` read the bearer token from when ``--token`` is not given."""
DRY_RUN_KEYS = 10
"""How many keys per table and kind ``sync --dry-run`` lists."""


def build_parser() -> argparse.ArgumentParser:
    """``--db`` may come before or after the command: ``client-sdk status --db app.db``."""
    parser = argparse.ArgumentParser(prog="client-sdk",
                                     description="Inspect and sync an offline-first SQLite database.")
    parser.add_argument("--db", help="the app's SQLite file")
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--db", default=argparse.SUPPRESS, help="the app's SQLite file")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", parents=[after], help="pending changes, last sync, conflicts")
    sync = commands.add_parser("sync", parents=[after], help="sync now, with a progress bar")
    resync = commands.add_parser("resync", parents=[after],
                                 help="download everything from the server again, keeping pending local changes")
    for command in (sync, resync):
        command.add_argument("--server", required=True, help="sync URL, e.g. http://127.0.0.1:8000/sync/")
        command.add_argument("--token", help=f"bearer token (default: ${TOKEN_VARIABLE}; prefer the variable, "
                                             "other users can see a command line)")
        command.add_argument("--retries", type=int, default=3,
                             help="retries of a round that hits a network error (default: 3)")
    sync.add_argument("--dry-run", action="store_true",
                      help=f"show what would move (the first {DRY_RUN_KEYS} keys per table), change nothing")
    conflicts = commands.add_parser("conflicts", parents=[after], help="the conflict log, newest first")
    conflicts.add_argument("--limit", type=int, default=20)
    return parser


class ProgressBar:
    """Sync progress on one text line: the round and phase, then a bar while received changes are applied."""

    WIDTH = 30

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.round = 0
        self._open = False

    def phase(self, phase: SyncPhase) -> None:
        """The engine's ``on_phase`` callback."""
        if phase is SyncPhase.COLLECTING:
            self.round += 1
        if phase in (SyncPhase.COMPLETE, SyncPhase.FAILED):
            self._end_line()
        else:
            self._draw(f"round {self.round}: {phase.value}")

    def __call__(self, stage: SyncStage, current: int, total: int) -> None:
        """The engine's ``progress`` callback."""
        if stage is not SyncStage.MUTATE or total <= 0:
            return
        filled = self.WIDTH * min(current, total) // total
        self._draw(f"round {self.round}: applying [{'#' * filled}{'.' * (self.WIDTH - filled)}] {current}/{total}")

    def _draw(self, text: str) -> None:
        self.stream.write(f"\r  {text:<60}")
        self.stream.flush()
        self._open = True

    def _end_line(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.db is None:
        parser.error("--db is required")
    path = Path(args.db)
    if not path.is_file():
        print(f"error: no database file at {path}", file=sys.stderr)
        return 2
    if not _tracks_tables(path):
        print(f"error: {path} tracks no tables yet, so there is nothing to inspect or sync: open it once from the app "
              "(SyncClient(path, models=...) tracks the app's tables), then run client-sdk on it again", file=sys.stderr)
        return 2
    try:
        if args.command in ("sync", "resync"):
            bar = ProgressBar()
            token = args.token or os.environ.get(TOKEN_VARIABLE) or None
            transport = HttpTransport(args.server, auth_token=token, retries=args.retries)
            with SyncClient(path, models=None, transport=transport, on_phase=bar.phase, progress=bar) as client:
                return _sync(client, args.server, getattr(args, "dry_run", False), resync=args.command == "resync")
        with SyncClient(path, models=None) as client:
            return _status(client) if args.command == "status" else _conflicts(client, args.limit)
    except StorageError as exc:
        print(f"error: cannot use {path} as a synced database: {exc.__cause__ or exc}", file=sys.stderr)
        return 1
    except SyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _tracks_tables(path: Path) -> bool:
    """Whether an app has tracked tables in the file (a file SQLite cannot read counts as yes: opening it says why)."""
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return True
    try:
        return bool(connection.execute('SELECT count(*) FROM "_sync_tables"').fetchone()[0])
    except sqlite3.OperationalError as exc:
        return "no such table" not in str(exc)
    except sqlite3.Error:
        return True
    finally:
        connection.close()


def _sync(client: SyncClient, server: str, dry_run: bool, resync: bool = False) -> int:
    try:
        result = client.resync() if resync else client.sync(dry_run=dry_run)
    except SyncError as exc:
        print(f"error: {'resync' if resync else 'sync'} with {server} failed: {exc}", file=sys.stderr)
        return 1
    counts = {name: count for name, count in result.summary().items() if count}
    done = "would move: " if dry_run else "resynced: " if resync else "synced: "
    print(done + (", ".join(f"{k} {v}" for k, v in counts.items()) or "nothing"))
    if dry_run:
        _list_keys(client, result)
    for error in result.errors:
        print(f"  error on {error.get('key')}: {error.get('message')}")
    return 0 if result.ok else 1


def _list_keys(client: SyncClient, result: DatabaseResult) -> None:
    """The keys of each kind and table, the first :data:`DRY_RUN_KEYS` of each."""
    tables = {label: table for table, label in client.models.items()}
    for kind in KEY_LISTS:
        for label, keys in sorted(getattr(result, kind).items()):
            if not keys:
                continue
            shown = ", ".join(keys[:DRY_RUN_KEYS])
            more = f" ... and {len(keys) - DRY_RUN_KEYS} more" if len(keys) > DRY_RUN_KEYS else ""
            print(f"  {kind} {tables.get(label, label)}: {shown}{more}")


def _status(client: SyncClient) -> int:
    pending = client.pending_changes()
    print(f"node id:          {client.node_id}")
    print(f"pending changes:  {len(pending)}")
    for change in pending[:10]:
        print(f"  {change.kind:<6} {change.table} {change.key}")
    if len(pending) > 10:
        print(f"  ... and {len(pending) - 10} more")
    _row_problems("not pushed:      ", client.quarantined(), "fix these rows; they go with the next sync")
    _row_problems("held back:       ", client.held_back(),
                  "received rows this database cannot store yet; the first sync after the schema changes stores them")
    last = client.last_sync
    if last is None:
        print("last sync:        never")
    else:
        outcome = "ok" if last.ok else f"failed ({last.error})" if last.error else "finished with errors"
        print(f"last sync:        {last.at.isoformat(timespec='seconds')} {outcome}")
    print(f"conflicts logged: {len(client.conflicts())}")
    return 0


def _row_problems(title: str, rows: list[QuarantinedRow] | list[HeldBackRow], advice: str) -> None:
    print(f"{title} {len(rows)} ({advice})" if rows else f"{title} 0")
    for row in rows[:10]:
        print(f"  {row.table} {row.key}: {row.reason}")
    if len(rows) > 10:
        print(f"  ... and {len(rows) - 10} more")


def _conflicts(client: SyncClient, limit: int) -> int:
    entries = client.conflicts(limit)
    if not entries:
        print("no conflicts")
    for entry in entries:
        print(f"{entry.at.isoformat(timespec='seconds')} {entry.model_label} {entry.key} "
              f"{entry.conflict_type}, {entry.winner} won")
        for name, sides in entry.fields.items():
            print(f"    {name}: local {sides['local']!r}, remote {sides['remote']!r} -> {sides['winner']} kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``client-sdk`` command: look at a synced database, sync it, read its conflict log."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from .client import SyncClient
from .engine.results import SyncPhase, SyncStage
from .errors import StorageError, SyncError
from .transport.http import HttpTransport


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
    sync.add_argument("--server", required=True, help="sync URL, e.g. http://127.0.0.1:8000/sync/")
    sync.add_argument("--token", help="bearer token")
    sync.add_argument("--retries", type=int, default=3,
                      help="retries of a round that hits a network error (default: 3)")
    sync.add_argument("--dry-run", action="store_true", help="show what would move, change nothing")
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
    try:
        if args.command == "sync":
            bar = ProgressBar()
            transport = HttpTransport(args.server, auth_token=args.token, retries=args.retries)
            with SyncClient(path, models=None, transport=transport, on_phase=bar.phase, progress=bar) as client:
                return _sync(client, args.server, args.dry_run)
        with SyncClient(path, models=None) as client:
            return _status(client) if args.command == "status" else _conflicts(client, args.limit)
    except StorageError as exc:
        print(f"error: cannot use {path} as a synced database: {exc.__cause__ or exc}", file=sys.stderr)
        return 1
    except SyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _sync(client: SyncClient, server: str, dry_run: bool) -> int:
    try:
        result = client.sync(dry_run=dry_run)
    except SyncError as exc:
        print(f"error: sync with {server} failed: {exc}", file=sys.stderr)
        return 1
    counts = {name: count for name, count in result.summary().items() if count}
    print(("would move: " if dry_run else "synced: ") + (", ".join(f"{k} {v}" for k, v in counts.items()) or "nothing"))
    for error in result.errors:
        print(f"  error on {error.get('key')}: {error.get('message')}")
    return 0 if result.ok else 1


def _status(client: SyncClient) -> int:
    pending = client.pending_changes()
    print(f"node id:          {client.node_id}")
    print(f"pending changes:  {len(pending)}")
    for change in pending[:10]:
        print(f"  {change.kind:<6} {change.table} {change.key}")
    if len(pending) > 10:
        print(f"  ... and {len(pending) - 10} more")
    held = client.quarantined()
    print(f"not pushed:       {len(held)} (fix these rows; they go with the next sync)" if held else "not pushed:       0")
    for row in held[:10]:
        print(f"  {row.table} {row.key}: {row.reason}")
    if len(held) > 10:
        print(f"  ... and {len(held) - 10} more")
    last = client.last_sync
    if last is None:
        print("last sync:        never")
    else:
        outcome = "ok" if last.ok else f"failed ({last.error})" if last.error else "finished with errors"
        print(f"last sync:        {last.at.isoformat(timespec='seconds')} {outcome}")
    print(f"conflicts logged: {len(client.conflicts())}")
    return 0


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

"""The ``client-sdk`` command: look at a synced database, sync it, read its conflict log."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .client import SyncClient
from .engine.results import SyncStage
from .errors import SyncError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="client-sdk", description="Inspect and sync an offline-first SQLite database.")
    parser.add_argument("--db", required=True, help="the app's SQLite file")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="pending changes, last sync, conflicts")
    sync = commands.add_parser("sync", help="sync now, with a progress bar")
    sync.add_argument("--server", required=True, help="sync URL, e.g. http://127.0.0.1:8000/sync/")
    sync.add_argument("--token", help="bearer token")
    sync.add_argument("--dry-run", action="store_true", help="show what would move, change nothing")
    conflicts = commands.add_parser("conflicts", help="the conflict log, newest first")
    conflicts.add_argument("--limit", type=int, default=20)
    return parser


class ProgressBar:
    """A one-line text progress bar on stderr, fed by the engine's ``progress`` callback."""

    WIDTH = 30

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream

    def __call__(self, stage: SyncStage, current: int, total: int) -> None:
        if stage is not SyncStage.MUTATE or total <= 0:
            return
        filled = self.WIDTH * min(current, total) // total
        self.stream.write(f"\r  applying [{'#' * filled}{'.' * (self.WIDTH - filled)}] {current}/{total}")
        if current >= total:
            self.stream.write("\n")
        self.stream.flush()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "sync":
            with SyncClient(args.db, models=None, server_url=args.server, auth_token=args.token,
                            progress=ProgressBar()) as client:
                return _sync(client, args.dry_run)
        with SyncClient(args.db, models=None) as client:
            return _status(client) if args.command == "status" else _conflicts(client, args.limit)
    except SyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _sync(client: SyncClient, dry_run: bool) -> int:
    result = client.sync(dry_run=dry_run)
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
              f"{entry.conflict_type} -> {entry.winner}")
        for name, sides in entry.fields.items():
            print(f"    {name}: local {sides['local']!r}  remote {sides['remote']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

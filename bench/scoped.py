"""The cost of scoped sync: a first sync of ``--rows`` rows through a user's scope, against the same
sync unscoped, on one server storage in this process (issue 17: within 1.5x).

    .venv/bin/python bench/scoped.py [--rows 100000] [--repeat 3]

The server holds one list of ``--rows`` tasks owned by alice and as many in a list of bob's, with
the issue's scopes (lists by owner or membership, tasks through their list); pages of 2,000 as
server_stub's. Each run is a fresh device syncing through the real JSON round trip: alice's
through her scope (seeing her half), and an unscoped one (seeing both halves), alternated; the
ratio compares time per row received, as the median of paired runs.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.servers import stamped  # noqa: E402
from client_sdk import DatabaseEngine, InProcessTransport, SqliteSyncStorage, SyncManifest  # noqa: E402

SCHEMA = """
CREATE TABLE todo_lists (id TEXT PRIMARY KEY, owner TEXT, name TEXT);
CREATE TABLE list_members (id TEXT PRIMARY KEY, list_id TEXT REFERENCES todo_lists (id), user_id TEXT);
CREATE TABLE tasks (id TEXT PRIMARY KEY, list_id TEXT REFERENCES todo_lists (id), title TEXT);
"""
MODELS = {"todo_lists": "todo.List", "list_members": "todo.Member", "tasks": "todo.Task"}
LISTS = "owner = :user OR id IN (SELECT list_id FROM list_members WHERE user_id = :user)"
SCOPES = {"todo_lists": LISTS, "tasks": f"list_id IN (SELECT id FROM todo_lists WHERE {LISTS})"}
PAGE = 2000


class AsUser:
    """The server engine answering as server_stub answers a token of ``user`` (None: a legacy token)."""

    def __init__(self, server: DatabaseEngine, storage: SqliteSyncStorage, user: str | None) -> None:
        self.inner, self.storage, self.user = InProcessTransport(server), storage, user

    def exchange(self, manifest: SyncManifest) -> SyncManifest:
        with self.storage.scoped_to(self.user):
            return self.inner.exchange(manifest)


def app_file(path: Path) -> Path:
    with sqlite3.connect(path) as setup:
        setup.executescript(SCHEMA)
    return path


def seed(storage: SqliteSyncStorage, rows: int) -> None:
    for owner in ("alice", "bob"):
        with storage.transaction():
            stamp = storage.clock.now()
            storage.upsert_many("todo.List", {owner: stamped({"id": owner, "owner": owner, "name": f"{owner}'s"}, stamp)},
                                received_at=stamp)
        for start in range(0, rows, 10_000):
            with storage.transaction():
                stamp = storage.clock.now()
                tasks = {}
                for n in range(start, min(rows, start + 10_000)):
                    key = str(uuid.uuid4())
                    tasks[key] = stamped({"id": key, "list_id": owner, "title": f"task {n}"}, stamp)
                storage.upsert_many("todo.Task", tasks, received_at=stamp)


def first_sync(
    server: DatabaseEngine, storage: SqliteSyncStorage, folder: Path, name: str, user: str | None
) -> tuple[float, int]:
    """Seconds per task received by a fresh device, and how many it received."""
    device = SqliteSyncStorage(app_file(folder / f"{name}.db"), MODELS, node_id=name)
    try:
        engine = DatabaseEngine(device, device.dependency_graph(), device.clock, name, transaction=device.transaction,
                                transport=AsUser(server, storage, user))
        started = time.perf_counter()
        engine.sync()
        elapsed = time.perf_counter() - started
        received = device.connection.execute("SELECT count(*) FROM tasks").fetchone()[0]
    finally:
        device.close()
    return elapsed / received, received


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="tasks in each user's list (default 100000)")
    parser.add_argument("--repeat", type=int, default=3, help="pairs of runs to take the median of")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        storage = SqliteSyncStorage(app_file(folder / "server.db"), MODELS, role="server", scopes=SCOPES)
        try:
            seed(storage, args.rows)
            server = DatabaseEngine(storage, storage.dependency_graph(), storage.clock, "server",
                                    transaction=storage.transaction, batch_size=PAGE)
            ratios, scoped, plain = [], [], []
            for run in range(args.repeat):
                per_row, received = first_sync(server, storage, folder, f"alice-{run}", "alice")
                base, everything = first_sync(server, storage, folder, f"legacy-{run}", None)
                if (received, everything) != (args.rows, 2 * args.rows):
                    raise SystemExit(f"wrong rows: alice received {received}, the legacy device {everything}")
                scoped.append(per_row)
                plain.append(base)
                ratios.append(per_row / base)
        finally:
            storage.close()
    ratio = statistics.median(ratios)
    print(f"scoped first sync: {statistics.median(scoped) * 1e6:.1f} us/row ({args.rows} rows of {2 * args.rows}), "
          f"unscoped {statistics.median(plain) * 1e6:.1f} us/row ({2 * args.rows} rows): "
          f"{ratio:.2f}x (target <= 1.5x) {'ok' if ratio <= 1.5 else 'MISS'}; runs {', '.join(f'{r:.2f}x' for r in ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

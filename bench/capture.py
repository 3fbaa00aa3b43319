"""Change-capture overhead: the same statements on an untracked and a tracked table, in one run.

    python bench/capture.py              # 100,000 rows, best of 3 (about a minute)
    python bench/capture.py --rows 20000 --repeat 1

Each side is a fresh database file written through a plain ``sqlite3``
connection, as an app would (WAL, ``synchronous=FULL``, default cache). The
tracked side has ``SqliteSyncStorage`` installed; its fold of the change log
into stamps (work done when sync state is next read, not by the app's
statement) is timed separately and left out of the ratios.

"bulk update" is issue 16's figure: one UPDATE of every row in one
transaction, on a WAL file, through a connection that is not the SDK's (the
SDK's storage stays open on the same file, its triggers installed), over the
same UPDATE of an identical untracked file; target <= 3x. Each side checks
that it is set up so before anything is timed.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client_sdk.sqlite import SqliteSyncStorage  # noqa: E402

SCHEMA = """CREATE TABLE tasks (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, notes TEXT, priority INTEGER NOT NULL,
    done BOOLEAN NOT NULL, score REAL, due TEXT
)"""

TARGETS = {"bulk insert": 2.5, "bulk update": 3.0, "autocommit update": 1.3, "full scan": 1.0, "point lookups": 1.0}

Row = tuple[str, str, str, int, int, float, str]


class Side:
    """One database file and the app connection writing it."""

    def __init__(self, folder: Path, tracked: bool) -> None:
        path = folder / ("tracked.db" if tracked else "untracked.db")
        setup = sqlite3.connect(path)
        setup.execute("PRAGMA journal_mode = WAL")
        setup.execute(SCHEMA)
        setup.commit()
        setup.close()
        self.storage = SqliteSyncStorage(path, {"tasks": "bench.Task"}) if tracked else None
        self.app = sqlite3.connect(path, isolation_level=None)
        self.app.execute("PRAGMA synchronous = FULL")
        self._check(tracked)
        self.folds: dict[str, float] = {}

    def _check(self, tracked: bool) -> None:
        """What the ratios claim: a WAL file, and the SDK's triggers on the tracked side only."""
        mode = self.app.execute("PRAGMA journal_mode").fetchone()[0]
        triggers = self.app.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'tasks'")
        if mode != "wal" or (triggers.fetchone()[0] > 0) != tracked:
            raise SystemExit(f"{'tracked' if tracked else 'untracked'} side set up wrong: journal_mode {mode}")

    def settle(self, phase: str) -> None:
        """Fold the change log (timed, reported apart) and checkpoint the WAL, so phases start alike."""
        if self.storage is not None:
            start = time.perf_counter()
            self.storage.pending_count()
            self.folds[phase] = time.perf_counter() - start
        self.app.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        self.app.close()
        if self.storage is not None:
            self.storage.close()


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def in_transaction(app: sqlite3.Connection, action: Callable[[sqlite3.Connection], object]) -> Callable[[], None]:
    def run() -> None:
        app.execute("BEGIN")
        action(app)
        app.execute("COMMIT")

    return run


def run_pair(
    sides: dict[bool, Side], rows: list[Row], single: int, lookups: int, tracked_first: bool
) -> dict[bool, dict[str, float]]:
    """Every phase on both sides back to back (the order alternates between runs); the
    autocommit updates are interleaved statement by statement, so fsync noise hits both alike."""
    keys = [row[0] for row in rows]
    picker = random.Random(7)
    singles = [(f"renamed {i}", picker.choice(keys)) for i in range(single)]
    probes = [picker.choice(keys) for _ in range(lookups)]
    order = [True, False] if tracked_first else [False, True]
    out: dict[bool, dict[str, float]] = {False: {}, True: {}}

    def phase(name: str, action: Callable[[sqlite3.Connection], object], *, write: bool) -> None:
        for tracked in order:
            app = sides[tracked].app
            out[tracked][name] = timed(in_transaction(app, action) if write else partial(action, app))
            if write:
                sides[tracked].settle(name)

    phase("bulk insert", lambda app: app.executemany("INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?)", rows), write=True)
    phase("bulk update", lambda app: app.execute("UPDATE tasks SET priority = priority + 1"), write=True)
    spent = {False: 0.0, True: 0.0}
    for values in singles:
        for tracked in order:
            spent[tracked] += timed(partial(sides[tracked].app.execute, "UPDATE tasks SET title = ? WHERE id = ?", values))
        order.reverse()
    for tracked, seconds in spent.items():
        out[tracked]["autocommit update"] = seconds
        sides[tracked].settle("autocommit update")
    phase("full scan", lambda app: app.execute("SELECT * FROM tasks").fetchall(), write=False)
    phase("point lookups", lambda app: [app.execute("SELECT * FROM tasks WHERE id = ?", (key,)).fetchone() for key in probes],
          write=False)
    phase("delete all", lambda app: app.execute("DELETE FROM tasks"), write=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--single", type=int, default=2_000, help="autocommit single-row updates")
    parser.add_argument("--lookups", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best time of each statement on each side is kept")
    args = parser.parse_args(argv)

    maker = random.Random(42)
    rows: list[Row] = [
        (str(uuid.UUID(int=maker.getrandbits(128), version=4)), f"task {i}", "some notes about the task " * 2,
         i % 5, i % 2, i * 0.25, f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}")
        for i in range(args.rows)
    ]
    best: dict[bool, dict[str, float]] = {False: {}, True: {}}
    folds: dict[str, float] = {}
    print(f"rows={args.rows} single={args.single} lookups={args.lookups} repeat={args.repeat} sqlite={sqlite3.sqlite_version}")
    for run in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="capture-bench-") as folder:
            sides = {tracked: Side(Path(folder), tracked) for tracked in (False, True)}
            try:
                times = run_pair(sides, rows, args.single, args.lookups, tracked_first=run % 2 == 1)
            finally:
                for side in sides.values():
                    side.close()
        for tracked, phases in times.items():
            for phase, seconds in phases.items():
                best[tracked][phase] = min(seconds, best[tracked].get(phase, seconds))
        for phase, seconds in sides[True].folds.items():
            folds[phase] = min(seconds, folds.get(phase, seconds))

    print(f"\n{'statement':<20}{'untracked':>11}{'tracked':>11}{'ratio':>8}{'target':>9}")
    failed = False
    for phase, untracked in best[False].items():
        tracked_time = best[True][phase]
        ratio = tracked_time / untracked
        target = TARGETS.get(phase)
        verdict = ""
        if target is not None:
            # reads are expected to tie: allow measurement noise around 1.0x
            ok = ratio <= (1.1 if target == 1.0 else target)
            failed |= not ok
            verdict = f"<= {target:.1f}x {'ok' if ok else 'OVER'}"
        print(f"{phase:<20}{untracked:>10.3f}s{tracked_time:>10.3f}s{ratio:>7.2f}x  {verdict}")
    print("\nfold of the change log into stamps (sync-side work, not in the ratios):")
    for phase, seconds in folds.items():
        print(f"  after {phase:<20}{seconds:>8.3f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

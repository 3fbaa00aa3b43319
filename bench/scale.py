"""Push and pull at growing sizes against a real ``server_stub``: time per row and peak memory of both sides.

    .venv/bin/python bench/scale.py [--sizes 10000,100000,1000000]

Issue 16 asks that a 1,000,000-row push and pull each complete with a peak RSS
under 200 MB on the client and on the server, and that the time per row stay
flat from 10k to 1M. For each size, in this order:

* **pull**: the server's database is seeded with N tasks (written through
  ``SqliteSyncStorage.upsert_many``, as if devices had pushed them), then a
  fresh ``SyncClient`` on an empty file does its first sync;
* **push**: a fresh ``SyncClient`` whose file holds N tasks written by the app
  (a plain ``sqlite3`` connection, after the SDK installed its triggers) syncs
  them to an empty server. The fold of the change log is sync's work, so it is
  timed with the push.

Each phase gets a server process of its own (``python -m server_stub`` on
127.0.0.1) and a client process of its own, so each peak is that phase's
alone: each one's ``VmHWM`` from /proc (the server's read just before it is
stopped; not ``ru_maxrss``, which Linux carries over from the parent of a
spawned process). The CPU time
each process spent on the sync is shown beside the wall time.

The machine is noisy and absolute times prove little, so the figure to read
is the *curve*: each size's time per row divided by the smallest size's, from
the same run. Flat is about 1.0x all along; the row count of both sides is
checked after every phase.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import cpu_seconds, in_child, peak_rss_mb, proc_status_mb  # noqa: E402
from bench.servers import MODELS, SCHEMA, running_server, stamped  # noqa: E402
from client_sdk import SyncClient  # noqa: E402
from client_sdk.sqlite.install import CACHE_KIB  # noqa: E402
from client_sdk.sqlite.storage import SqliteSyncStorage  # noqa: E402
from server_stub.config import ServerConfig  # noqa: E402
from server_stub.schema import create_schema  # noqa: E402

LISTS = 100
CHUNK = 10_000
RSS_TARGET_MB = 200.0
MB = 1024 * 1024


# ---------------------------------------------------------------- rows


def _keys(seed: int) -> Callable[[], str]:
    random = Random(seed)
    return lambda: str(uuid.UUID(int=random.getrandbits(128), version=4))  # random, as real keys are


def list_rows(seed: int) -> list[tuple[str, str]]:
    new_key = _keys(seed)
    return [(new_key(), f"List {i}") for i in range(LISTS)]


def task_rows(seed: int, lists: list[tuple[str, str]], count: int) -> Iterator[tuple[Any, ...]]:
    """``count`` tasks, generated as they are consumed (a million rows never sit in a list)."""
    new_key = _keys(seed + 1)
    for i in range(count):
        yield (new_key(), lists[i % LISTS][0], f"Task number {i}", i % 3 == 0, i % 5, "bench " * (i % 4))


def _chunks(rows: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ---------------------------------------------------------------- the server


def server_config(folder: Path) -> tuple[Path, ServerConfig]:
    """A config file for ``python -m server_stub`` in ``folder`` (database ``server.db`` beside it)."""
    path = folder / "server.toml"
    path.write_text(f'database = "server.db"\nnode_id = "server"\nschema = """{SCHEMA}"""\n[models]\n'
                    + "".join(f'{table} = "{label}"\n' for table, label in MODELS.items()))
    return path, ServerConfig(database=folder / "server.db", models=MODELS, schema=SCHEMA, node_id="server")


def seed_server(config: ServerConfig, count: int) -> None:
    """Fill the server's database through its storage, as if devices had pushed ``count`` tasks."""
    create_schema(config)
    storage = SqliteSyncStorage(config.database, dict(config.models), role="server", node_id=config.node_id)
    task_fields = ("id", "list_id", "title", "done", "priority", "notes")
    try:
        lists = list_rows(1)
        with storage.transaction():
            stamp = storage.clock.now()
            storage.upsert_many("todo.TodoList", {key: stamped({"id": key, "name": name}, stamp) for key, name in lists},
                                received_at=stamp)
        for chunk in _chunks(task_rows(1, lists, count), CHUNK):
            with storage.transaction():
                stamp = storage.clock.now()
                records = {row[0]: stamped(dict(zip(task_fields, row, strict=True)), stamp) for row in chunk}
                storage.upsert_many("todo.Task", records, received_at=stamp)
    finally:
        storage.close()










def count_rows(path: Path, table: str = "Task") -> int:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        found: int = connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        return found
    finally:
        connection.close()


# ---------------------------------------------------------------- the client (a process of its own)


def _app_schema(path: Path) -> None:
    """The app's own tables, created as the app creates them (the SDK comes later)."""
    setup = sqlite3.connect(path)
    setup.executescript(SCHEMA)
    setup.close()




def _synced(client: SyncClient) -> dict[str, Any]:
    started, cpu_started = time.perf_counter(), time.process_time()
    result = client.sync()
    return {"seconds": time.perf_counter() - started, "client_cpu": time.process_time() - cpu_started,
            "rounds": result.rounds, "ok": result.ok, "errors": len(result.errors)}


def pull_phase(url: str, path: str) -> dict[str, Any]:
    """Fresh process: the first sync of an empty client from the seeded server."""
    _app_schema(Path(path))
    with SyncClient(path, models=MODELS, node_id="puller", server_url=url + "/sync/", timeout=600) as client:
        before = peak_rss_mb()
        report = _synced(client)
    return {**report, "client_rss_before": before, "client_rss": peak_rss_mb()}


def push_phase(url: str, path: str, count: int) -> dict[str, Any]:
    """Fresh process: the app writes ``count`` tasks through a connection of its own, then the client pushes them."""
    _app_schema(Path(path))
    with SyncClient(path, models=MODELS, node_id="pusher", server_url=url + "/sync/", timeout=600) as client:
        app = sqlite3.connect(path, isolation_level=None)
        lists = list_rows(2)
        app.execute("BEGIN")
        app.executemany("INSERT INTO TodoList VALUES (?, ?)", lists)
        app.executemany("INSERT INTO Task VALUES (?, ?, ?, ?, ?, ?)", task_rows(2, lists, count))
        app.execute("COMMIT")
        app.close()
        before = peak_rss_mb()
        report = _synced(client)
        report["pending_after"] = client.pending_changes()
    return {**report, "client_rss_before": before, "client_rss": peak_rss_mb()}






# ---------------------------------------------------------------- one size


@dataclass
class Measured:
    phase: str
    rows: int
    seconds: float
    client_cpu: float
    server_cpu: float | None
    client_rss: float
    client_rss_before: float
    server_rss: float | None
    server_rss_idle: float | None
    rounds: int
    problems: list[str]

    @property
    def us_per_row(self) -> float:
        return self.seconds / self.rows * 1e6


def measure(phase: str, size: int, folder: Path) -> Measured:
    """One phase at one size, in ``folder`` (a fresh one each time): seed, serve, sync, check."""
    config_path, config = server_config(folder)
    client_path = folder / "client.db"
    if phase == "pull":
        seed_server(config, size)
    else:
        create_schema(config)
    with running_server(config_path) as (base, pid):
        idle_rss, cpu_before = proc_status_mb(pid, "VmHWM"), cpu_seconds(pid)
        if phase == "pull":
            report = in_child(pull_phase, base, str(client_path))
        else:
            report = in_child(push_phase, base, str(client_path), size)
        cpu_after, server_rss = cpu_seconds(pid), proc_status_mb(pid, "VmHWM")
    server_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    problems = []
    if not report["ok"]:
        problems.append(f"{report['errors']} records refused")
    on_client, on_server = count_rows(client_path), count_rows(config.database)
    if on_client != size or on_server != size:
        problems.append(f"tasks: {on_client} on the client, {on_server} on the server, {size} expected")
    if report.get("pending_after"):
        problems.append(f"{report['pending_after']} changes still pending after the push")
    return Measured(phase, size, report["seconds"], report["client_cpu"], server_cpu, report["client_rss"],
                    report["client_rss_before"], server_rss, idle_rss, report["rounds"], problems)


# ---------------------------------------------------------------- baseline (this process)

PAGE = 2000
"""Rows per transaction of the baseline: server_stub's page (``limits.batch_size``)."""


def plain_insert(size: int, folder: Path) -> float:
    """Seconds to store ``size`` tasks (the same random keys as the pull) in plain tables of a fresh WAL
    file, one transaction per page, with a sync connection's page cache: what SQLite alone costs per row
    at this size, B-tree growth and all."""
    connection = sqlite3.connect(folder / "plain.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute(f"PRAGMA cache_size = -{CACHE_KIB}")  # as big as a sync connection's
    connection.executescript(SCHEMA.replace("REFERENCES TodoList (id)", ""))
    lists = list_rows(1)
    connection.executemany("INSERT INTO TodoList VALUES (?, ?)", lists)
    started = time.perf_counter()
    for page in _chunks(task_rows(1, lists, size), PAGE):
        connection.execute("BEGIN")
        connection.executemany("INSERT OR REPLACE INTO Task VALUES (?, ?, ?, ?, ?, ?)", page)
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


# ---------------------------------------------------------------- report


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} MB"


def print_table(results: list[Measured], plain: dict[int, float]) -> list[str]:
    """The table, one line per phase and size; returns what missed a target or went wrong."""
    missed: list[str] = []
    first: dict[str, float] = {}
    if plain:
        results = results + [Measured("plain", size, seconds, 0.0, None, 0.0, 0.0, None, None, 0, [])
                             for size, seconds in plain.items()]
    print(f"\n{'phase':<6}{'rows':>10}{'time':>10}{'us/row':>9}{'rows/s':>10}{'curve':>7}"
          f"{'client RSS':>12}{'server RSS':>12}{'client CPU':>12}{'server CPU':>12}{'rounds':>8}")
    for m in results:
        first.setdefault(m.phase, m.us_per_row)
        curve = m.us_per_row / first[m.phase]
        if m.phase == "plain":
            print(f"{m.phase:<6}{m.rows:>10,}{m.seconds:>9.2f}s{m.us_per_row:>9.1f}{m.rows / m.seconds:>10,.0f}"
                  f"{curve:>6.2f}x  (baseline: the same rows into plain tables, {PAGE} per transaction)")
            continue
        server_cpu = "-" if m.server_cpu is None else f"{m.server_cpu:.2f} s"
        print(f"{m.phase:<6}{m.rows:>10,}{m.seconds:>9.2f}s{m.us_per_row:>9.1f}{m.rows / m.seconds:>10,.0f}"
              f"{curve:>6.2f}x{_mb(m.client_rss):>12}{_mb(m.server_rss):>12}{m.client_cpu:>10.2f} s"
              f"{server_cpu:>12}{m.rounds:>8}")
        for name, peak in (("client", m.client_rss), ("server", m.server_rss)):
            if peak is not None and peak >= RSS_TARGET_MB:
                missed.append(f"{m.phase} of {m.rows:,} rows: {name} peak RSS {peak:.0f} MB, over {RSS_TARGET_MB:.0f} MB")
        missed += [f"{m.phase} of {m.rows:,} rows: {problem}" for problem in m.problems]
    print("\ncurve: time per row over the smallest size's, same phase, same run (flat: about 1.0x); the plain"
          "\ncurve is SQLite's own: random keys in B-trees that outgrow the page cache cost more per row")
    print("RSS: peak of the whole process (VmHWM); before the sync: "
          + ", ".join(f"{m.phase} {m.rows:,}: client {_mb(m.client_rss_before)}, server {_mb(m.server_rss_idle)}"
                      for m in results if m.phase != "plain"))
    return missed


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be whole numbers separated by commas, got {text!r}") from None
    if not sizes or any(size <= 0 for size in sizes):
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sorted(set(sizes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("10000,100000,1000000"),
                        help="task counts, comma-separated (default 10000,100000,1000000)")
    parser.add_argument("--phases", default="pull,push", help="pull, push or both (default pull,push)")
    args = parser.parse_args(argv)
    phases = [phase for phase in ("pull", "push") if phase in args.phases.split(",")]
    if not phases:
        parser.error("--phases: name pull, push or both")

    print(f"sizes={','.join(map(str, args.sizes))} phases={','.join(phases)} sqlite={sqlite3.sqlite_version}", flush=True)
    results = []
    plain: dict[int, float] = {}
    for phase in phases:
        for size in args.sizes:
            with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
                print(f"{phase} {size:,} rows ...", flush=True)
                results.append(measure(phase, size, Path(tmp)))
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
            print(f"plain SQLite {size:,} rows ...", flush=True)
            plain[size] = plain_insert(size, Path(tmp))
    missed = print_table(results, plain)
    for line in missed:
        print(f"MISSED: {line}")
    print(f"\ntarget: peak RSS < {RSS_TARGET_MB:.0f} MB on both sides {'ok' if not missed else 'MISSED'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Sync throughput against a real ``server_stub`` on loopback, each phase as a ratio to a baseline of the same run.

    .venv/bin/python bench/sync.py [--rows 100000] [--edits 1000] [--repeat 5]
    .venv/bin/python bench/sync.py --only-initial [--repeat 7]   # the initial sync alone

Phases (the client is DatabaseEngine + SqliteSyncStorage(role="client") +
HttpTransport, in a child process of its own so its peak RSS is its own):

* initial sync of ``--rows`` tasks to a fresh client; baseline: inflating and
  json-decoding the same response bodies and bulk-inserting the same rows into
  plain tables;
* incremental sync after ``--edits`` local edits; baseline: one bare POST of
  the same request body, json-decoding it and bulk-upserting its rows into a
  plain table;
* no-op sync (nothing to do on either side); baseline: a GET /health round
  trip to the same server (issue 16);
* push of ``--push-rows`` rows written locally (tasks under 100 lists) by a
  fresh client to a fresh, empty server; baseline: reading the same rows
  (values and one stamp each) from a plain SQLite table in pages of the
  server's per-request limit (5,000), encoding each page as the manifest
  JSON the client sends (records with their field stamps), gzipping it as
  the transport does, POSTing it, and, in a server process of the same
  kind (a one-route Starlette app on uvicorn, ``plain_app``), inflating,
  json-decoding and bulk-inserting its rows into a plain table, one
  transaction per request, answering ``{"ok": true}``. Requests go one
  after another. The sync is timed from ``sync()``, so folding the change
  log its inserts left counts too.

These machines are noisy: the initial sync and its baseline run ``--repeat``
times, alternated, and the no-op syncs alternate with the GET /health requests. Each run
is divided by the mean of the baseline runs just before and just after it, so
a drift in the machine's speed cancels out; the ratio reported is the median
of those paired ratios (the time columns show the medians of each side). The
report also shows each initial run's own ratio, and the CPU time the client and the
server process each spent on the initial sync (the server's read from /proc,
so on Linux only): where the two together come near the wall time times the
cores, the sync is bound by the machine, not by waiting.

The 1M-row run is bench/scale.py's (issue 16), run on its own: its line in the table
points there.

Targets (issue 16): initial <= 2x (issue 4 asked 3x), no-op <= 2x a GET /health, push <= 3x, peak RSS < 200 MB.
"""

from __future__ import annotations

import argparse
import gzip
import inspect
import json
import multiprocessing
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from random import Random
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import cpu_seconds, in_child, peak_rss_mb  # noqa: E402
from bench.servers import MODELS, SCHEMA, free_port, running_server, stamped, wait_until_healthy  # noqa: E402
from client_sdk.client import SyncClient  # noqa: E402
from client_sdk.engine.engine import DatabaseEngine  # noqa: E402
from client_sdk.protocol.wire import SyncManifest  # noqa: E402
from client_sdk.sqlite.storage import SqliteSyncStorage  # noqa: E402
from client_sdk.transport.compression import gzip_bytes  # noqa: E402
from client_sdk.transport.http import HttpTransport  # noqa: E402
from server_stub.config import DEFAULT_RECORDS_PER_MODEL_MAX, ServerConfig  # noqa: E402
from server_stub.schema import create_schema  # noqa: E402

COLUMNS = {"todo.TodoList": ("id", "name"), "todo.Task": ("id", "list_id", "title", "done", "priority", "notes")}
TABLES = {label: table for table, label in MODELS.items()}
LISTS = 100
MB = 1024 * 1024
CLIENT_BATCH_SIZE: int = inspect.signature(SyncClient).parameters["batch_size"].default
"""The push is paged as an app's ``SyncClient`` pages it."""


class Recorder:
    """Keeps the request manifests (as dicts) of the rounds it carries, for the baselines; a
    ByteTransport like the HttpTransport it wraps, so the client pages exactly as it would without it."""

    def __init__(self, inner: HttpTransport, *, keep: bool = True) -> None:
        self.inner = inner
        self.keep = keep
        """False: keep nothing (a push's baseline makes its own requests; keeping them would cost the
        push the dicts' time and memory)."""
        self.requests: list[dict[str, Any]] = []

    def exchange(self, manifest: SyncManifest) -> SyncManifest:
        return self.decode(self.send(manifest))

    def send(self, manifest: SyncManifest) -> bytes:
        if self.keep:
            self.requests.append(manifest.to_dict())
        return self.inner.send(manifest)

    def decode(self, body: bytes) -> SyncManifest:
        return self.inner.decode(body)


# ---------------------------------------------------------------- the server


def seed_server(config: ServerConfig, rows: int) -> None:
    """Fill the server database through its storage, as if clients had pushed ``rows`` tasks."""
    create_schema(config)
    storage = SqliteSyncStorage(config.database, dict(config.models), role="server", node_id=config.node_id)
    random = Random(4)
    new_key = lambda: str(uuid.UUID(int=random.getrandbits(128), version=4))  # noqa: E731 - random, as real keys are
    try:
        lists = [new_key() for _ in range(LISTS)]
        with storage.transaction():
            stamp = storage.clock.now()
            storage.upsert_many("todo.TodoList", {key: stamped({"id": key, "name": f"List {i}"}, stamp)
                                                  for i, key in enumerate(lists)}, received_at=stamp)
        for start in range(0, rows, 10_000):
            with storage.transaction():
                stamp = storage.clock.now()
                tasks = {}
                for i in range(start, min(start + 10_000, rows)):
                    key = new_key()
                    tasks[key] = stamped({"id": key, "list_id": lists[i % LISTS], "title": f"Task number {i}",
                                          "done": i % 3 == 0, "priority": i % 5, "notes": "bench " * (i % 4)}, stamp)
                storage.upsert_many("todo.Task", tasks, received_at=stamp)
    finally:
        storage.close()






# ---------------------------------------------------------------- the client (child process)


def open_client(
    url: str, path: str, batch_size: int = 1000, *, record: bool = True
) -> tuple[SqliteSyncStorage, HttpTransport, Recorder, DatabaseEngine]:
    storage = SqliteSyncStorage(path, MODELS, role="client")
    http = HttpTransport(url + "/sync/")
    recorder = Recorder(http, keep=record)
    engine = DatabaseEngine(storage, storage.dependency_graph(), storage.clock, storage.node_id,
                            batch_size=batch_size, transaction=storage.transaction, transport=recorder)
    return storage, http, recorder, engine


def local_rows(rows: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The rows a device writes before the push: (lists, tasks) as column tuples, the same every time."""
    random = Random(16)
    new_key = lambda: str(uuid.UUID(int=random.getrandbits(128), version=4))  # noqa: E731
    lists = [(new_key(), f"Pushed list {i}") for i in range(LISTS)]
    tasks = [(new_key(), lists[i % LISTS][0], f"Pushed task {i}", i % 3 == 0, i % 5, "push " * (i % 4))
             for i in range(rows)]
    return lists, tasks


def push_phase(url: str, path: str, rows: int) -> dict[str, Any]:
    """Runs in a fresh process: a device writes ``rows`` tasks (and their lists), then pushes them all."""
    create_schema(ServerConfig(database=Path(path), models=MODELS, schema=SCHEMA))
    storage, http, _recorder, engine = open_client(url, path, CLIENT_BATCH_SIZE, record=False)
    lists, tasks = local_rows(rows)
    with storage.connection:
        storage.connection.executemany("INSERT INTO TodoList (id, name) VALUES (?, ?)", lists)
        storage.connection.executemany(
            "INSERT INTO Task (id, list_id, title, done, priority, notes) VALUES (?, ?, ?, ?, ?, ?)", tasks)
    del lists, tasks  # the app's rows are in its file now, not in this process
    started, cpu_started = time.perf_counter(), time.process_time()
    result = engine.sync()
    report = {
        "push_s": time.perf_counter() - started,
        "push_cpu_s": time.process_time() - cpu_started,
        "push_rounds": result.rounds,
        "pushed": result.count("pushed"),
        "push_bytes": http.bytes_sent,
        "push_peak_rss_mb": peak_rss_mb(),
    }
    http.close()
    storage.close()
    return report


def initial_phase(url: str, path: str) -> dict[str, Any]:
    """Runs in a fresh process: the first sync of an empty client, and that process's peak RSS."""
    create_schema(ServerConfig(database=Path(path), models=MODELS, schema=SCHEMA))
    storage, http, recorder, engine = open_client(url, path)
    started, cpu_started = time.perf_counter(), time.process_time()
    result = engine.sync()
    elapsed = time.perf_counter() - started
    report = {
        "initial_s": elapsed,
        "initial_cpu_s": time.process_time() - cpu_started,
        "initial_rounds": result.rounds,
        "initial_bytes": http.bytes_received,
        "peak_rss_mb": peak_rss_mb(),
        "rows": storage.connection.execute("SELECT count(*) FROM Task").fetchone()[0],
        "initial_requests": recorder.requests,
    }
    http.close()
    storage.close()
    return report


def later_phases(url: str, path: str, edits: int, noops: int) -> dict[str, Any]:
    """Runs in a fresh process on the synced client: an incremental sync after ``edits`` edits, then no-op syncs."""
    storage, http, recorder, engine = open_client(url, path)
    with storage.connection:
        storage.connection.execute(
            "UPDATE Task SET title = title || ' (edited)', done = NOT done WHERE id IN (SELECT id FROM Task LIMIT ?)",
            (edits,))
    started = time.perf_counter()
    result = engine.sync()
    report = {
        "incremental_s": time.perf_counter() - started,
        "incremental_rounds": result.rounds,
        "incremental_pushed": result.count("pushed"),
        "incremental_requests": [request for request in recorder.requests if request["payloads"]],
    }
    durations, bare = [], []
    with httpx.Client() as client:
        for _ in range(noops):  # alternated, so both see the same machine
            started = time.perf_counter()
            engine.sync()
            durations.append(time.perf_counter() - started)
            bare.append(health_get(client, url))
    report["noop_s"] = statistics.median(durations)
    report["noop_base_s"] = statistics.median(bare)
    report["noop_ratio"] = statistics.median(pair_ratios(durations, bare))
    http.close()
    storage.close()
    return report






# ---------------------------------------------------------------- baselines (this process)


def plain_database(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.executescript(SCHEMA.replace("REFERENCES TodoList (id)", ""))
    return connection


def store_plain(connection: sqlite3.Connection, manifest: dict[str, Any]) -> int:
    """Bulk upsert every record of a decoded manifest into plain tables, in one transaction."""
    stored = 0
    connection.execute("BEGIN")
    for payload in manifest["payloads"]:
        columns = COLUMNS[payload["model_label"]]
        rows = [tuple(record["data"].get(name) for name in columns) for record in payload["records"].values()]
        connection.executemany(
            f"INSERT OR REPLACE INTO {TABLES[payload['model_label']]} VALUES ({', '.join('?' * len(columns))})", rows)
        stored += len(rows)
    connection.execute("COMMIT")
    return stored




def fetch_bodies(base: str, requests: list[dict[str, Any]]) -> list[bytes]:
    """The server's answers to the recorded requests, as they crossed the wire (gzip)."""
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", "Accept-Encoding": "gzip"}
    bodies = []
    with httpx.Client(headers=headers, timeout=120) as client:
        for request in requests:
            with client.stream("POST", base + "/sync/", content=gzip.compress(json.dumps(request).encode())) as answer:
                bodies.append(b"".join(answer.iter_raw()))
    return bodies


def initial_baseline(bodies: list[bytes], path: Path) -> tuple[float, int]:
    connection = plain_database(path)
    started = time.perf_counter()
    stored = sum(store_plain(connection, json.loads(gzip.decompress(body))) for body in bodies)
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed, stored


def health_get(client: httpx.Client, base: str) -> float:
    """One GET /health round trip to the same server (issue 16's baseline for the no-op sync)."""
    started = time.perf_counter()
    client.get(base + "/health")
    return time.perf_counter() - started


def incremental_baseline(base: str, requests: list[dict[str, Any]], path: Path) -> float:
    connection = plain_database(path)
    bodies = [gzip.compress(json.dumps(r, separators=(",", ":")).encode()) for r in requests]
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    with httpx.Client() as client:
        client.post(base + "/health")
        started = time.perf_counter()
        for body in bodies:
            client.post(base + "/health", content=body, headers=headers)
            store_plain(connection, json.loads(gzip.decompress(body)))
        elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def plain_app(path: str) -> Any:
    """The push baseline's server: inflate, decode, bulk-insert each request's rows into plain tables."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    connection = plain_database(Path(path))

    async def store(request: Request) -> JSONResponse:
        body = gzip.decompress(await request.body())
        store_plain(connection, json.loads(body))
        return JSONResponse({"ok": True})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/plain/", store, methods=["POST"]), Route("/health", health, methods=["GET"])])


def serve_plain(port: int, path: str) -> None:
    import uvicorn

    uvicorn.run(plain_app(path), host="127.0.0.1", port=port, log_level="warning")


@contextmanager
def running_plain_server(path: Path) -> Iterator[str]:
    """``plain_app`` in a process of its own on a free loopback port; yields its base URL."""
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=serve_plain, args=(port, str(path)))
    server.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, server.is_alive, "the plain server")
        yield base
    finally:
        server.terminate()
        server.join(30)


def plain_source(path: Path, rows: int) -> None:
    """The push baseline's device: the same rows as the push's, in plain tables with a stamp each."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("CREATE TABLE TodoList (id TEXT PRIMARY KEY, name TEXT, stamp INTEGER)")
    connection.execute("CREATE TABLE Task (id TEXT PRIMARY KEY, list_id TEXT, title TEXT, done BOOLEAN, "
                       "priority INTEGER, notes TEXT, stamp INTEGER)")
    lists, tasks = local_rows(rows)
    stamp = time.time_ns() // 1_000_000 << 16
    with connection:
        connection.execute("BEGIN")
        connection.executemany("INSERT INTO TodoList VALUES (?, ?, ?)", [(*row, stamp) for row in lists])
        connection.executemany("INSERT INTO Task VALUES (?, ?, ?, ?, ?, ?, ?)", [(*row, stamp) for row in tasks])
        connection.execute("COMMIT")
    connection.close()


def push_baseline(base: str, source: Path) -> tuple[float, int]:
    """Read, encode, gzip and POST the source's rows, a page of the server's per-request limit at a
    time; (seconds, requests)."""
    connection = sqlite3.connect(source)
    page = DEFAULT_RECORDS_PER_MODEL_MAX
    requests = 0
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    with httpx.Client(headers=headers, timeout=120) as client:
        client.get(base + "/health")
        started = time.perf_counter()
        for label in ("todo.TodoList", "todo.Task"):
            columns = COLUMNS[label]
            after = ""
            while True:
                rows = connection.execute(
                    f"SELECT {', '.join(columns)}, stamp FROM {TABLES[label]} WHERE id > ? ORDER BY id LIMIT ?",
                    (after, page)).fetchall()
                if not rows:
                    break
                after = rows[-1][0]
                records = {row[0]: {"data": dict(zip(columns, row, strict=False)),
                                    "timestamps": dict.fromkeys(columns, row[-1])} for row in rows}
                manifest = {"node_id": "plain", "checkpoint": 0, "node_time": int(time.time()),
                            "payloads": [{"model_label": label, "records": records, "deletes": {}}],
                            "after_keys": {}, "has_more": True, "checksum": None}
                body = gzip_bytes(json.dumps(manifest, separators=(",", ":")).encode("ascii"))
                client.post(base + "/plain/", content=body).raise_for_status()
                requests += 1
        elapsed = time.perf_counter() - started
    connection.close()
    return elapsed, requests


# ---------------------------------------------------------------- report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="tasks on the server (default 100000)")
    parser.add_argument("--edits", type=int, default=1_000, help="rows edited before the incremental sync")
    parser.add_argument("--noops", type=int, default=50, help="no-op syncs to take the median of")
    parser.add_argument("--repeat", type=int, default=7, help="initial syncs (each to a fresh client) to take the median of")
    parser.add_argument("--batch-size", type=int, default=None, help="server page size (default: server_stub's)")
    parser.add_argument("--push-rows", type=int, default=100_000, help="rows a fresh device pushes (default 100000)")
    parser.add_argument("--push-repeat", type=int, default=3, help="pushes (each to a fresh server) to take the median of")
    parser.add_argument("--only-push", action="store_true", help="run the push phase alone")
    parser.add_argument("--only-initial", action="store_true", help="run the initial sync phase alone")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="sync-bench-") as tmp:
        folder = Path(tmp)
        limits = f"\n[limits]\nbatch_size = {args.batch_size}\n" if args.batch_size else ""
        phases = [] if args.only_push else pull_phases(args, folder, limits)
        if not args.only_initial:
            phases.append(push_phases(args, folder, limits))
    if not (args.only_push or args.only_initial):
        phases.append(("1M run", "not run here: bench/scale.py", None, None, None, None))
    print_report(phases)
    return 0


Phase = tuple[str, str, float | None, float | None, float | None, float | None]
"""(name, detail, time, baseline time, ratio, target ratio); a phase not run has no figures."""


def server_config(folder: Path, name: str, limits: str) -> Path:
    """A server_stub config whose database is ``name``.db in ``folder``."""
    path = folder / f"{name}.toml"
    path.write_text(f'database = "{name}.db"\nnode_id = "server"\nschema = """{SCHEMA}"""\n[models]\n'
                    + "".join(f'{table} = "{label}"\n' for table, label in MODELS.items()) + limits)
    return path


def pull_phases(args: argparse.Namespace, folder: Path, limits: str) -> list[Phase]:
    """The initial, incremental and no-op syncs (the first alone with ``--only-initial``), against a
    server seeded with ``--rows`` tasks."""
    config_path = server_config(folder, "server", limits)
    print(f"seeding the server with {args.rows} tasks ...", flush=True)
    seed_server(ServerConfig(database=folder / "server.db", models=MODELS, schema=SCHEMA, node_id="server"), args.rows)
    with running_server(config_path) as (base, server_pid):
        initial_runs, baseline_runs, peak_rss = [], [], 0.0
        client_cpu, server_cpu = [], []
        for run in range(args.repeat):  # alternated, so both see the same machine
            client = str(folder / f"client-{run}.db")
            server_cpu_before = cpu_seconds(server_pid) or 0.0
            report = in_child(initial_phase, base, client)
            server_cpu.append((cpu_seconds(server_pid) or 0.0) - server_cpu_before)
            client_cpu.append(report["initial_cpu_s"])
            bodies = fetch_bodies(base, report["initial_requests"])
            initial_base, stored = initial_baseline(bodies, folder / f"plain-initial-{run}.db")
            del bodies
            initial_runs.append(report["initial_s"])
            baseline_runs.append(initial_base)
            peak_rss = max(peak_rss, report["peak_rss_mb"])
        if not args.only_initial:
            report.update(in_child(later_phases, base, client, args.edits, args.noops))
            incremental_base = incremental_baseline(base, report["incremental_requests"], folder / "plain-edits.db")

    rows = report["rows"]
    initial_s = statistics.median(initial_runs)
    ratios = ", ".join(f"{ratio:.2f}x" for ratio in pair_ratios(initial_runs, baseline_runs))
    server_share = f", server process {statistics.median(server_cpu):.2f} s" if all(server_cpu) else ""
    print(f"initial sync CPU (medians): client process {statistics.median(client_cpu):.2f} s{server_share}")
    rss_ok = peak_rss < 200
    print(f"peak client RSS: {peak_rss:.0f} MB (target < 200 MB) {'ok' if rss_ok else 'OVER TARGET'}")
    if stored != rows + LISTS:
        print(f"warning: the baseline stored {stored} rows, the sync {rows + LISTS}")
    initial: Phase = (
        "initial sync", f"{rows} rows, {report['initial_rounds']} rounds, {rows / initial_s:,.0f} rows/s, "
                        f"{report['initial_bytes'] / max(rows, 1):.1f} wire bytes/row; {args.repeat} runs "
                        f"(each: {ratios})",
        initial_s, statistics.median(baseline_runs), statistics.median(pair_ratios(initial_runs, baseline_runs)), 2.0)
    if args.only_initial:
        return [initial]
    return [
        initial,
        ("incremental sync", f"{report['incremental_pushed']} edits pushed, {report['incremental_rounds']} rounds",
         report["incremental_s"], incremental_base, report["incremental_s"] / incremental_base, None),
        ("no-op sync", f"{args.noops} runs", report["noop_s"], report["noop_base_s"], report["noop_ratio"], 2.0),
    ]


def push_phases(args: argparse.Namespace, folder: Path, limits: str) -> Phase:
    """Pushes of ``--push-rows`` rows by a fresh device to a fresh server, alternated with the baseline."""
    source = folder / "plain-source.db"
    plain_source(source, args.push_rows)
    runs, baseline_runs, client_cpu, server_cpu = [], [], [], []
    for run in range(args.push_repeat):
        print(f"push {run + 1} of {args.push_repeat} ...", flush=True)
        with running_server(server_config(folder, f"push-server-{run}", limits)) as (base, server_pid):
            server_cpu_before = cpu_seconds(server_pid) or 0.0
            report = in_child(push_phase, base, str(folder / f"push-client-{run}.db"), args.push_rows)
            server_cpu.append((cpu_seconds(server_pid) or 0.0) - server_cpu_before)
        with running_plain_server(folder / f"plain-push-{run}.db") as plain:
            baseline, requests = push_baseline(plain, source)
        runs.append(report["push_s"])
        client_cpu.append(report["push_cpu_s"])
        baseline_runs.append(baseline)
    if report["pushed"] != args.push_rows + LISTS:
        print(f"warning: the sync pushed {report['pushed']} rows of {args.push_rows + LISTS}")
    push_s = statistics.median(runs)
    ratios = ", ".join(f"{ratio:.2f}x" for ratio in pair_ratios(runs, baseline_runs))
    server_share = f", server process {statistics.median(server_cpu):.2f} s" if all(server_cpu) else ""
    print(f"push CPU (medians): client process {statistics.median(client_cpu):.2f} s{server_share}; "
          f"peak client RSS {report['push_peak_rss_mb']:.0f} MB")
    return ("push", f"{args.push_rows + LISTS} rows, {report['push_rounds']} rounds (baseline {requests} requests), "
                    f"{(args.push_rows + LISTS) / push_s:,.0f} rows/s, {report['push_bytes'] / max(args.push_rows, 1):.1f} "
                    f"wire bytes/row; {args.push_repeat} runs (each: {ratios})",
            push_s, statistics.median(baseline_runs), statistics.median(pair_ratios(runs, baseline_runs)), 3.0)


def pair_ratios(runs: list[float], baselines: list[float]) -> list[float]:
    """Each run's time over its baseline's: runs and baseline runs alternate, so each run comes
    between two baseline runs and is divided by their mean (the first run, by the one after it)."""
    beside = baselines[:1] + [(before + after) / 2 for before, after in pairwise(baselines)]
    return [run / base for run, base in zip(runs, beside, strict=True)]


def print_report(phases: list[Phase]) -> None:
    print(f"\n{'phase':<18}{'time':>10}{'baseline':>11}{'ratio':>8}  {'target':<8} detail")
    for name, detail, elapsed, baseline, ratio, target in phases:
        if elapsed is None or baseline is None or ratio is None:
            print(f"{name:<18}{'-':>10}{'-':>11}{'-':>8}  {'-':<12} {detail}")
            continue
        verdict = "-" if target is None else (f"<={target:g}x ok" if ratio <= target else f"<={target:g}x MISS")
        print(f"{name:<18}{_duration(elapsed):>10}{_duration(baseline):>11}{ratio:>7.2f}x  {verdict:<12} {detail}")


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


if __name__ == "__main__":
    sys.exit(main())

"""Fifty clients syncing at once against one server_stub: throughput and latency of SQLite with one server
process, against PostgreSQL with one and with two (issue 18).

    .venv/bin/python bench/concurrency.py [--clients 50] [--syncs 20] [--processes 5] [--repeat 3]

Each client is the SDK's SyncClient, with a SQLite file and a node id of its own, syncing over HTTP
(no retries: a failed sync is counted, not hidden). The clients are threads spread over ``--processes``
client processes: in one process, one GIL would serialise the fifty clients' own work, and the bench
would measure the clients rather than the server. Each client first syncs once, untimed (its connection
opened, the rows so far pulled); then all start together and each does ``--syncs`` timed syncs, every
other one after a small write of its own (a new task, an edit of one of its tasks, now and then a new
list): half the syncs push a little, and every sync pulls what the others pushed since.

Configurations, each on a fresh database, served by a fresh ``python -m server_stub`` on a free port:

* SQLite, 1 process: the baseline;
* PostgreSQL, 1 process;
* PostgreSQL, 2 processes (``--workers 2``).

PostgreSQL is one throwaway cluster from ``tests/pgcluster.py`` with PostgreSQL's durable defaults (each
commit flushed, as SQLite flushes its own). A configuration whose server cannot start (no PostgreSQL
binaries here, or a server_stub that does not take a PostgreSQL URL) is reported as ``not available``
with the server's own error.

Throughput is the syncs done over the time from the common start to the last client's end; latency is
each ``sync()`` call's, p50 and p99. The configurations run ``--repeat`` times, alternated, so that a
drift in the machine's speed touches them alike: throughput is the median of the runs, latencies are
pooled, and the ratio is the median of each run's throughput over the SQLite run's of the same round.

Clients and servers share the machine's cores, so the report also gives the CPU time per sync of the
server (its processes and, on PostgreSQL, the cluster's, read from /proc: Linux only) and of the
clients, over the same span: where the two together, times the throughput, come near the number of
cores, the figures are the machine's limit, not the server's.
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import tree_cpu_seconds  # noqa: E402
from bench.servers import MODELS, SCHEMA, ServerDidNotStart, running_server  # noqa: E402
from client_sdk import SyncClient, SyncError  # noqa: E402
from tests.pgcluster import PostgresCluster, unavailable_reason  # noqa: E402

SECONDS_MAX = 600
"""How long a client process may take to set up or to run: past it, the bench stops (a hung server)."""


@dataclass(frozen=True)
class Configuration:
    name: str
    postgres: bool
    workers: int


CONFIGURATIONS = (
    Configuration("SQLite, 1 process", postgres=False, workers=1),
    Configuration("PostgreSQL, 1 process", postgres=True, workers=1),
    Configuration("PostgreSQL, 2 processes", postgres=True, workers=2),
)
BASELINE = CONFIGURATIONS[0]


@dataclass(frozen=True)
class Run:
    """What one run of one configuration measured, between the common start and the last client's end."""

    throughput: float
    """Syncs per second."""
    latencies: list[float]
    errors: list[str]
    server_cpu: float
    """CPU seconds per sync: the server's processes, PostgreSQL's included."""
    client_cpu: float
    """CPU seconds per sync of the client processes."""


@dataclass
class Outcome:
    """One configuration's runs; ``unavailable`` says why it has none."""

    runs: list[Run] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    unavailable: str | None = None


# -- in each client process --

def write_something(client: SyncClient, rng: Random, lists: list[str], tasks: list[str]) -> None:
    """A small write of the client's own: a new list now and then, else a new task or an edit of one."""
    with client.connection as db:
        if not lists or rng.random() < 0.1:
            lists.append(str(uuid.uuid4()))
            db.execute("INSERT INTO TodoList (id, name) VALUES (?, ?)", (lists[-1], f"list of {client.node_id}"))
        elif tasks and rng.random() < 0.4:
            db.execute("UPDATE Task SET done = NOT done, priority = ? WHERE id = ?", (rng.randint(1, 5), rng.choice(tasks)))
        else:
            tasks.append(str(uuid.uuid4()))
            db.execute("INSERT INTO Task (id, list_id, title, done, priority, notes) VALUES (?, ?, ?, 0, ?, '')",
                       (tasks[-1], rng.choice(lists), f"task {len(tasks)}", rng.randint(1, 5)))


def timed_syncs(client: SyncClient, syncs: int) -> tuple[list[float], list[str]]:
    """``syncs`` syncs, every other one after a write; returns each successful sync's seconds and the errors."""
    rng = Random(client.node_id)
    lists: list[str] = []
    tasks: list[str] = []
    latencies: list[float] = []
    errors: list[str] = []
    for number in range(syncs):
        if number % 2 == 0:
            write_something(client, rng, lists, tasks)
        began = time.perf_counter()
        try:
            client.sync()
        except SyncError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        latencies.append(time.perf_counter() - began)
    return latencies, errors


def client_process(url: str, folder: Path, names: list[str], syncs: int, start: Any, results: Any) -> None:
    """Open this process's clients, sync each once, wait for every process, then run them all at once."""
    with ExitStack() as stack:
        clients = []
        for name in names:
            path = folder / f"{name}.db"
            with closing(sqlite3.connect(path)) as connection:
                connection.executescript(SCHEMA)
            clients.append(stack.enter_context(SyncClient(path, models=MODELS, node_id=name, server_url=url, retries=0)))
        for client in clients:
            client.sync()
        start.wait(SECONDS_MAX)
        began, cpu = time.monotonic(), time.process_time()
        with ThreadPoolExecutor(len(clients)) as pool:
            done = list(pool.map(timed_syncs, clients, [syncs] * len(clients)))
        ended, cpu = time.monotonic(), time.process_time() - cpu
    results.put({"began": began, "ended": ended, "cpu": cpu,
                 "latencies": [seconds for latencies, _ in done for seconds in latencies],
                 "errors": [error for _, errors in done for error in errors]})


# -- in the bench's own process --

def server_config(folder: Path, name: str, database: str) -> Path:
    path = folder / f"{name}.toml"
    models = "".join(f'{table} = "{label}"\n' for table, label in MODELS.items())
    path.write_text(f'database = "{database}"\nnode_id = "server"\nschema = """{SCHEMA}"""\n[models]\n{models}')
    return path


def measure(base: str, folder: Path, args: argparse.Namespace, server_pids: list[int]) -> Run:
    """``--clients`` clients in ``--processes`` processes against the server at ``base``, whose processes are
    ``server_pids`` and their children."""
    context = multiprocessing.get_context("spawn")
    processes = min(args.processes, args.clients)
    start = context.Barrier(processes + 1)  # this process too: the server's CPU is read when the clients start
    results = context.Queue()
    names = [f"client-{number:02d}-{uuid.uuid4().hex[:6]}" for number in range(args.clients)]
    children = [context.Process(target=client_process, args=(f"{base}/sync/", folder, names[index::processes], args.syncs,
                                                              start, results)) for index in range(processes)]
    for child in children:
        child.start()
    try:
        start.wait(SECONDS_MAX)
        server_began = sum(map(tree_cpu_seconds, server_pids))
        reports = [results.get(timeout=SECONDS_MAX) for _ in children]
        server_used = sum(map(tree_cpu_seconds, server_pids)) - server_began
    except (threading.BrokenBarrierError, queue.Empty):  # a client process died (its traceback is above) or hung
        raise SystemExit("a client process failed or hung (see above)") from None
    finally:
        for child in children:
            child.join(SECONDS_MAX)
    latencies = [seconds for report in reports for seconds in report["latencies"]]
    elapsed = max(report["ended"] for report in reports) - min(report["began"] for report in reports)
    syncs = max(len(latencies), 1)
    return Run(len(latencies) / elapsed, latencies, [error for report in reports for error in report["errors"]],
               server_used / syncs, sum(report["cpu"] for report in reports) / syncs)


@contextmanager
def database_for(configuration: Configuration, cluster: PostgresCluster | None, name: str) -> Iterator[str]:
    """A fresh database for one run: a SQLite file (relative to the config's folder), or a PostgreSQL URL."""
    if not configuration.postgres:
        yield f"{name}.db"
        return
    assert cluster is not None
    url = cluster.create_database()
    try:
        yield url
    finally:
        cluster.drop_database(url)


def run_round(round_: int, cluster: PostgresCluster | None, folder: Path, args: argparse.Namespace,
              outcomes: dict[Configuration, Outcome]) -> None:
    """One run of each configuration still available, the baseline first."""
    baseline: float | None = None
    for number, configuration in enumerate(CONFIGURATIONS):
        outcome = outcomes[configuration]
        if outcome.unavailable is not None:
            continue
        run_folder = folder / f"run-{round_}-{number}"
        run_folder.mkdir()
        with database_for(configuration, cluster, run_folder.name) as database:
            config = server_config(folder, run_folder.name, database)
            try:
                with running_server(config, workers=configuration.workers) as (base, server_pid):
                    print(f"run {round_ + 1}: {configuration.name} ...", flush=True)
                    pids = [server_pid] if cluster is None or not configuration.postgres else [server_pid, cluster.server_pid]
                    run = measure(base, run_folder, args, pids)
            except ServerDidNotStart as exc:
                if configuration is BASELINE:
                    raise
                outcome.unavailable = exc.error
                continue
        baseline = run.throughput if configuration is BASELINE else baseline
        assert baseline is not None
        outcome.runs.append(run)
        outcome.ratios.append(run.throughput / baseline)


def print_report(args: argparse.Namespace, outcomes: dict[Configuration, Outcome]) -> None:
    processes = min(args.processes, args.clients)
    print(f"\n{args.clients} clients in {processes} client process{'es' if processes > 1 else ''}, {args.syncs} syncs each "
          f"(every other one after a write), {args.repeat} run{'s' if args.repeat > 1 else ''} of each configuration")
    print(f"{'configuration':<26}{'syncs/s':>10}{'p50':>11}{'p99':>11}{'CPU/sync: server':>19}{'clients':>11}"
          f"   throughput vs {BASELINE.name}")
    for configuration, outcome in outcomes.items():
        if outcome.unavailable is not None:
            print(f"{configuration.name:<26}not available: {outcome.unavailable}")
            continue
        runs = outcome.runs
        p50, p99 = percentiles([seconds for run in runs for seconds in run.latencies])
        server_cpu = statistics.median(run.server_cpu for run in runs)
        client_cpu = statistics.median(run.client_cpu for run in runs)
        ratios = ", ".join(f"{value:.2f}x" for value in outcome.ratios)
        note = " (the baseline)" if configuration is BASELINE else f" (runs {ratios})"
        print(f"{configuration.name:<26}{statistics.median(run.throughput for run in runs):>10.1f}{p50 * 1e3:>8.1f} ms"
              f"{p99 * 1e3:>8.1f} ms{server_cpu * 1e3:>16.1f} ms{client_cpu * 1e3:>8.1f} ms"
              f"   {statistics.median(outcome.ratios):.2f}x{note}")
    for configuration, outcome in outcomes.items():
        errors = [error for run in outcome.runs for error in run.errors]
        if errors:
            print(f"warning: {configuration.name}: {len(errors)} syncs failed; the first: {errors[0]}")


def percentiles(latencies: list[float]) -> tuple[float, float]:
    """p50 and p99 of the pooled latencies."""
    if len(latencies) < 2:
        return (latencies or [0.0])[0], (latencies or [0.0])[0]
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return cuts[49], cuts[98]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50, help="clients syncing at once (default 50)")
    parser.add_argument("--syncs", type=int, default=20, help="timed syncs per client (default 20)")
    parser.add_argument("--processes", type=int, default=5, help="client processes the clients are spread over (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each configuration, alternated (default 3)")
    args = parser.parse_args(argv)
    if min(args.clients, args.syncs, args.processes, args.repeat) < 1:
        parser.error("--clients, --syncs, --processes and --repeat must be positive")
    postgres_missing = unavailable_reason()
    outcomes = {configuration: Outcome(unavailable=postgres_missing if configuration.postgres else None)
                for configuration in CONFIGURATIONS}
    with tempfile.TemporaryDirectory(prefix="concurrent-bench-") as name, ExitStack() as stack:
        cluster = None if postgres_missing else stack.enter_context(PostgresCluster(durable=True))
        for round_ in range(args.repeat):
            run_round(round_, cluster, Path(name), args, outcomes)
    print_report(args, outcomes)
    return 0


if __name__ == "__main__":
    sys.exit(main())

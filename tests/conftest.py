"""Shared fixtures: where the golden vectors live.

The project ships its own copy of the golden vectors in ``tests/vectors`` so that
a clone of it alone runs the whole suite. ``tests/protocol/test_vectors_copy.py``
checks that copy against the team's ``../shared/vectors`` whenever that folder
exists next to the project; ``tests/seed`` and ``../shared/seed`` (the API page
the public API must match) are checked the same way.

Hypothesis runs without its timing checks (a deadline per example, a health
check on slow data generation): on a loaded two-core machine they fail at random,
and the suite makes no timing assertions.

The notes world of the client and reliability tests is here too: ``server`` starts
server_stub (under uvicorn on 127.0.0.1) on a SQLite file in ``tmp_path``, ``device``
opens a SyncClient on another, ``create_file`` and ``rows`` make and read the app's
own table.

PostgreSQL (issue 18): ``postgres_cluster`` is one throwaway cluster per test session (per xdist
worker), started at the first test that asks for it from the machine's server binaries
(``tests/pgcluster.py``); where there are none, those tests skip saying what to install.
``postgres_url`` is a fresh, empty database of it for one test, dropped after it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from client_sdk import HttpTransport, SyncClient
from server_stub import ServerConfig, create_app
from tests.loopback import serve as serve_app
from tests.pgcluster import PostgresCluster, unavailable_reason

settings.register_profile("untimed", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("untimed")

VECTORS = Path(__file__).resolve().parent / "vectors"
SHARED_VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
SEED = Path(__file__).resolve().parent / "seed"
"""The project's copy of the seed's API page(s) (``../shared/seed``), read by ``protocol/test_seed_api.py``."""
SHARED_SEED = Path(__file__).resolve().parents[2] / "shared" / "seed"


def load_vectors(name: str) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return loaded


NOTES_SCHEMA = "CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY, body TEXT, pinned BOOLEAN);"
NOTES = {"notes": "notes.Note"}
NOTE = "notes.Note"


@contextmanager
def serve(config: ServerConfig, port: int = 0) -> Iterator[str]:
    """server_stub for ``config`` on 127.0.0.1:``port`` (0: a free one); yields the sync URL."""
    with serve_app(create_app(config), port) as base:
        yield f"{base}/sync/"


def create_file(path: Path, schema: str = NOTES_SCHEMA) -> Path:
    """The app's own schema, created the way an app does before it opens the SDK."""
    connection = sqlite3.connect(path)
    try:
        connection.executescript(schema)
    finally:
        connection.close()
    return path


def rows(path: Path, table: str = "notes") -> dict[str, tuple[Any, ...]]:
    """A table's rows by id, read through a fresh connection (WAL lets it while others write)."""
    connection = sqlite3.connect(path)
    try:
        return {row[0]: tuple(row[1:]) for row in connection.execute(f"SELECT * FROM {table} ORDER BY id")}
    finally:
        connection.close()


Server = Callable[..., str]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """``server(schema=..., models=..., port=..., tokens=...)`` starts a server_stub on ``tmp_path/server.db``
    (notes by default) and returns its sync URL; it stops at the end of the test."""
    with ExitStack() as stack:
        def start(schema: str = NOTES_SCHEMA, models: dict[str, str] | None = None, port: int = 0,
                  **options: Any) -> str:
            config = ServerConfig(database=tmp_path / "server.db", models=models or NOTES, schema=schema, **options)
            return stack.enter_context(serve(config, port))
        yield start


Device = Callable[..., SyncClient]


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Device]:
    """``device(name, url)`` opens a notes SyncClient on ``tmp_path/<name>.db`` with a fast-failing transport."""
    with ExitStack() as stack:
        def open_device(name: str, url: str | None = None, **options: Any) -> SyncClient:
            path = create_file(tmp_path / f"{name}.db")
            transport = HttpTransport(url, retries=0, timeout=10.0) if url else None
            return stack.enter_context(SyncClient(path, models=NOTES, node_id=name, transport=transport, **options))
        yield open_device


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT/dbN``: empty, this test's alone."""
    url = postgres_cluster.create_database()
    try:
        yield url
    finally:
        postgres_cluster.drop_database(url)

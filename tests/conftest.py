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
server_stub (under uvicorn on 127.0.0.1) on the test's ``server_database``, ``device``
opens a SyncClient on a SQLite file in ``tmp_path``, ``create_file`` and ``rows`` make
and read the app's own table (``tests/serverdb.py`` reads the server's).

PostgreSQL (issue 18): ``postgres_cluster`` is one throwaway cluster per test session (per xdist
worker), started at the first test that asks for it from the machine's server binaries
(``tests/pgcluster.py``); where there are none, those tests skip saying what to install.
``postgres_url`` is a fresh, empty database of it for one test, dropped after it.

Both backends: a test that asks for ``server_database`` (or ``new_server_database``, or
``server_backend`` itself) runs once per backend, ``[sqlite]`` on ``tmp_path/server.db`` and
``[postgres]`` on a fresh PostgreSQL database. ``@pytest.mark.sqlite_only("why")`` keeps a test (or
a module, as ``pytestmark``) on SQLite, saying why; ``@pytest.mark.postgres_xfail("bug")`` expects
its PostgreSQL run to fail (strictly) because of a server bug the reason describes.
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
from tests.serverdb import Database

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
def server(server_database: Database) -> Iterator[Server]:
    """``server(schema=..., models=..., port=..., tokens=...)`` starts a server_stub on ``server_database``
    (notes by default) and returns its sync URL; it stops at the end of the test."""
    with ExitStack() as stack:
        def start(schema: str = NOTES_SCHEMA, models: dict[str, str] | None = None, port: int = 0,
                  **options: Any) -> str:
            config = ServerConfig(database=server_database, models=models or NOTES, schema=schema, **options)
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


BACKENDS = ("sqlite", "postgres")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only(reason): the test's server runs on SQLite only, for the reason given")
    config.addinivalue_line("markers", "postgres_xfail(reason): the test fails on PostgreSQL because of the server bug given")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test whose fixtures reach ``server_backend`` runs on each backend its marks leave it."""
    if "server_backend" not in metafunc.fixturenames:
        return
    backends: list[Any] = list(BACKENDS)
    sqlite_only = metafunc.definition.get_closest_marker("sqlite_only")
    if sqlite_only is not None:
        assert sqlite_only.args, "sqlite_only needs a reason"
        backends = ["sqlite"]
    failing = metafunc.definition.get_closest_marker("postgres_xfail")
    if failing is not None:
        assert failing.args and sqlite_only is None, "postgres_xfail needs a reason, and a test that runs on PostgreSQL"
        backends = ["sqlite", pytest.param("postgres", marks=pytest.mark.xfail(strict=True, reason=failing.args[0]))]
    metafunc.parametrize("server_backend", backends, indirect=True, scope="session")


@pytest.fixture(scope="session")
def server_backend(request: pytest.FixtureRequest) -> str:
    """``"sqlite"`` or ``"postgres"``: the backend this run of the test puts its servers on."""
    backend: str = request.param
    return backend


NewDatabase = Callable[[Path], Database]


@contextmanager
def server_databases(backend: str, request: pytest.FixtureRequest) -> Iterator[NewDatabase]:
    """A maker of empty server databases on ``backend``: ``folder/server.db``, or a new PostgreSQL database
    of the session's cluster (started here, or skipped where there is none), each dropped when the block ends."""
    if backend == "sqlite":
        yield lambda folder: folder / "server.db"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    made: list[str] = []

    def new(folder: Path) -> Database:
        made.append(cluster.create_database())
        return made[-1]

    try:
        yield new
    finally:
        for url in made:
            cluster.drop_database(url)


@pytest.fixture
def new_server_database(server_backend: str, request: pytest.FixtureRequest) -> Iterator[NewDatabase]:
    """``new_server_database(folder)``: an empty server database on this run's backend, for a test that
    starts servers on several (dropped after the test)."""
    with server_databases(server_backend, request) as new:
        yield new


@pytest.fixture(scope="module")
def module_server_database(server_backend: str, tmp_path_factory: pytest.TempPathFactory,
                           request: pytest.FixtureRequest) -> Iterator[Callable[[], Database]]:
    """For the servers a module shares between its tests: ``module_server_database()`` is an empty server
    database on this run's backend (in a folder of its own), dropped after the module's last test."""
    with server_databases(server_backend, request) as new:
        yield lambda: new(tmp_path_factory.mktemp("server"))


@pytest.fixture
def server_database(new_server_database: NewDatabase, tmp_path: Path) -> Database:
    """The test's server database: ``tmp_path/server.db`` on SQLite, a fresh, empty database on PostgreSQL."""
    return new_server_database(tmp_path)

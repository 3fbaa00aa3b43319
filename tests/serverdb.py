"""A test server's database, read (or written) the same way whichever backend holds it (issue 18).

A server's ``database`` is a SQLite file (a ``Path``) or a PostgreSQL database (a ``postgresql://``
URL, see ``postgres_url`` in ``tests/conftest.py``). The helpers here open a connection of their own
through ``sqlite3`` or ``psycopg`` by that value, so a test states what the server holds without
caring which backend it runs on. SQL given to them must mean the same on both: unquoted table names
(PostgreSQL folds ``TodoList`` to ``todolist``), no parameters. Values come back as each driver gives
them: a PostgreSQL boolean is ``True``/``False`` where SQLite gives ``1``/``0``, which compare equal.

``server_storage`` opens the server's own storage of a config (as the server opens it), for what
only it knows: tombstones, stamps.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from server_stub import ServerConfig
from server_stub.backend import ServerBackend, open_backend

Database = Path | str
"""A server's ``ServerConfig.database``: a SQLite file or a PostgreSQL URL."""


Query = Callable[[str], list[tuple[Any, ...]]]


@contextmanager
def _connected(database: Database) -> Iterator[Query]:
    """``query(sql)`` on one connection of its own: the rows ``sql`` returns (none for a statement that
    returns none, committed at once)."""
    if isinstance(database, Path):
        with closing(sqlite3.connect(database, isolation_level=None)) as connection:
            yield lambda sql: connection.execute(sql).fetchall()
        return
    import psycopg  # the postgres extra; only a test on PostgreSQL gets here

    with psycopg.connect(database, autocommit=True) as connection:
        def query(sql: str) -> list[tuple[Any, ...]]:
            cursor = connection.execute(sql.encode())
            return cursor.fetchall() if cursor.description is not None else []
        yield query


def server_query(database: Database, sql: str) -> list[tuple[Any, ...]]:
    """The rows ``sql`` returns, read (or written, at once) through a connection of its own."""
    with _connected(database) as query:
        return query(sql)


def server_rows(database: Database, table: str = "notes") -> dict[Any, tuple[Any, ...]]:
    """A table's rows by id, the other columns in order (as ``tests.conftest.rows`` reads a device's)."""
    return {row[0]: tuple(row[1:]) for row in server_query(database, f"SELECT * FROM {table} ORDER BY id")}


def server_snapshot(database: Database, *, skip: tuple[str, ...] = ()) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but ``skip`` (the server's own tables too), to tell that a request changed nothing."""
    if isinstance(database, Path):
        tables = "SELECT name FROM sqlite_master WHERE type = 'table'"
    else:
        tables = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    with _connected(database) as query:
        return {table: sorted(query(f'SELECT * FROM "{table}"'), key=repr)
                for (table,) in query(tables) if table not in skip}


@contextmanager
def server_storage(config: ServerConfig) -> Iterator[ServerBackend]:
    """The server's storage of ``config``, opened beside a running server as another server process opens it."""
    storage = open_backend(config)
    try:
        yield storage
    finally:
        storage.close()

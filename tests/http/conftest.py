"""Real servers on 127.0.0.1: ``server_stub`` under uvicorn, and a scripted rogue for client edge cases."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from server_stub import ServerConfig, create_app
from tests.loopback import serve
from tests.serverdb import Database

TODO_SCHEMA = """
CREATE TABLE TodoList (id TEXT PRIMARY KEY, name TEXT);
CREATE TABLE Task (
    id TEXT PRIMARY KEY,
    list_id TEXT REFERENCES TodoList (id),
    title TEXT,
    done BOOLEAN,
    priority INTEGER,
    notes TEXT
);
"""
TODO_MODELS = {"TodoList": "todo.TodoList", "Task": "todo.Task"}
LIST = "todo.TodoList"
TASK = "todo.Task"


def todo_config(database: Database, **options: object) -> ServerConfig:
    return ServerConfig(database=database, models=TODO_MODELS, schema=TODO_SCHEMA, node_id="server", **options)  # type: ignore[arg-type]


ServerFactory = Callable[..., str]


@pytest.fixture
def todo_server(server_database: Database) -> Iterator[ServerFactory]:
    """``todo_server(**config_options)`` starts a server_stub on the todo schema (in ``server_database``)
    and returns its base URL."""
    with ExitStack() as stack:
        yield lambda **options: stack.enter_context(serve(create_app(todo_config(server_database, **options))))

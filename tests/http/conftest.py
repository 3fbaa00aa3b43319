"""Real servers on 127.0.0.1: ``server_stub`` under uvicorn, and a scripted rogue for client edge cases."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import uvicorn

from server_stub import ServerConfig, create_app

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


@contextmanager
def serve(app: object) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free 127.0.0.1 port in a thread; yield its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def todo_config(tmp_path: Path, **options: object) -> ServerConfig:
    return ServerConfig(database=tmp_path / "server.db", models=TODO_MODELS, schema=TODO_SCHEMA, node_id="server", **options)  # type: ignore[arg-type]


ServerFactory = Callable[..., str]


@pytest.fixture
def todo_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """``todo_server(**config_options)`` starts a server_stub on the todo schema and returns its base URL."""
    with ExitStack() as stack:
        yield lambda **options: stack.enter_context(serve(create_app(todo_config(tmp_path, **options))))

"""The to-do app's model: plain SQL on its own tables; the SDK tracks every write."""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

from client_sdk import DatabaseResult, InvalidParameterError
from client_sdk.client import SyncClient

SCHEMA = """
CREATE TABLE IF NOT EXISTS lists (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    list_id TEXT REFERENCES lists(id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    done BOOLEAN NOT NULL DEFAULT 0,
    priority INTEGER NOT NULL DEFAULT 0,
    notes TEXT NOT NULL DEFAULT ''
);
"""
MODELS = {"lists": "todo.TodoList", "tasks": "todo.Task"}


@dataclass(frozen=True)
class Task:
    id: str
    list_name: str
    title: str
    done: bool
    priority: int
    notes: str


class TodoApp:
    """One device's to-do database. Every method works offline; ``sync()`` needs the server."""

    def __init__(
        self,
        device: str | Path,
        server_url: str | None = None,
        auth_token: str | None = None,
        node_id: str | None = None,
    ) -> None:
        path = Path(device)
        path.parent.mkdir(parents=True, exist_ok=True)
        setup = sqlite3.connect(path)
        try:
            setup.executescript(SCHEMA)
        finally:
            setup.close()
        self.client = SyncClient(path, models=MODELS, server_url=server_url, app_name="todo",
                                 auth_token=auth_token, node_id=node_id)
        self.db = self.client.connection

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> TodoApp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lists --
    def add_list(self, name: str) -> str:
        """A new list; a name already in use is refused (``add --list NAME`` creates a list on first use)."""
        if self.db.execute("SELECT 1 FROM lists WHERE name = ?", (name,)).fetchone() is not None:
            raise InvalidParameterError(f"a list named {name!r} exists already")
        list_id = str(uuid.uuid4())
        with self.db:
            self.db.execute("INSERT INTO lists (id, name) VALUES (?, ?)", (list_id, name))
        return list_id

    def list_id(self, name_or_id: str) -> str:
        row = self.db.execute("SELECT id FROM lists WHERE name = ? OR id = ?", (name_or_id, name_or_id)).fetchone()
        if row is None:
            raise InvalidParameterError(f"no list named {name_or_id!r}")
        return row[0]

    # -- tasks --
    def add(self, title: str, list_name: str, priority: int = 0, notes: str = "") -> str:
        """Add a task to the named list, creating the list on first use."""
        try:
            list_id = self.list_id(list_name)
        except InvalidParameterError:
            list_id = self.add_list(list_name)
        task_id = str(uuid.uuid4())
        with self.db:
            self.db.execute(
                "INSERT INTO tasks (id, list_id, title, priority, notes) VALUES (?, ?, ?, ?, ?)",
                (task_id, list_id, title, priority, notes),
            )
        return task_id

    def tasks(self) -> list[Task]:
        rows = self.db.execute(
            "SELECT t.id, COALESCE(l.name, '?'), t.title, t.done, t.priority, t.notes "
            "FROM tasks t LEFT JOIN lists l ON l.id = t.list_id ORDER BY l.name, t.priority DESC, t.title"
        ).fetchall()
        return [Task(r[0], r[1], r[2], bool(r[3]), r[4], r[5]) for r in rows]

    def resolve(self, prefix: str) -> str:
        """A task id from a unique prefix of it, or its exact title."""
        rows = self.db.execute(
            "SELECT id FROM tasks WHERE id LIKE ? ESCAPE '\\' OR title = ?",
            (prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%", prefix),
        ).fetchall()
        if len(rows) != 1:
            raise InvalidParameterError(f"{prefix!r} matches {len(rows)} tasks; give more of the id")
        return rows[0][0]

    def title(self, task_id: str) -> str:
        row = self.db.execute("SELECT title FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return "" if row is None else str(row[0])

    def edit(self, task: str, *, title: str | None = None, priority: int | None = None, notes: str | None = None) -> str:
        """Change a task; returns its id."""
        task_id = self.resolve(task)
        with self.db:
            self.db.execute(
                "UPDATE tasks SET title = COALESCE(?, title), priority = COALESCE(?, priority), "
                "notes = COALESCE(?, notes) WHERE id = ?",
                (title, priority, notes, task_id),
            )
        return task_id

    def set_done(self, task: str, done: bool = True) -> str:
        """Mark a task done (or not); returns its id."""
        task_id = self.resolve(task)
        with self.db:
            self.db.execute("UPDATE tasks SET done = ? WHERE id = ?", (done, task_id))
        return task_id

    def delete(self, task: str) -> str:
        """Delete a task; returns the id it had."""
        task_id = self.resolve(task)
        with self.db:
            self.db.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
        return task_id

    def sync(self) -> DatabaseResult:
        return self.client.sync()

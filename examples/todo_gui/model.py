"""The window's reads and writes, by id, on the to-do app's own tables (the CLI app's schema: they share a server)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from examples.todo.app import TodoApp


@dataclass(frozen=True)
class TodoList:
    id: str
    name: str
    open_tasks: int


@dataclass(frozen=True)
class TaskRow:
    id: str
    title: str
    done: bool


TASK_ORDER = "done, priority DESC, title COLLATE NOCASE, id"


class TodoModel(TodoApp):
    """``TodoApp`` plus the id-based operations a window needs. Every write commits at once; the SDK's
    triggers record it for the next sync."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        with self.db:  # a list's tasks in the window's order, a page at a time, without sorting them all each time
            self.db.execute(f"CREATE INDEX IF NOT EXISTS tasks_in_list_order ON tasks (list_id, {TASK_ORDER})")

    def lists(self) -> list[TodoList]:
        rows = self.db.execute(
            "SELECT l.id, l.name, COUNT(t.id) - COALESCE(SUM(t.done), 0) FROM lists l "
            "LEFT JOIN tasks t ON t.list_id = l.id GROUP BY l.id ORDER BY l.name COLLATE NOCASE, l.id"
        ).fetchall()
        return [TodoList(r[0], r[1], int(r[2])) for r in rows]

    def count_tasks(self, list_id: str) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM tasks WHERE list_id = ?", (list_id,)).fetchone()[0])

    def tasks_of(self, list_id: str, limit: int = -1, offset: int = 0) -> list[TaskRow]:
        """A list's tasks, not done first, then by priority and title; ``limit`` and ``offset`` page them."""
        rows = self.db.execute(
            f"SELECT id, title, done FROM tasks WHERE list_id = ? ORDER BY {TASK_ORDER} LIMIT ? OFFSET ?",
            (list_id, limit, offset),
        ).fetchall()
        return [TaskRow(r[0], r[1], bool(r[2])) for r in rows]

    def rename_list(self, list_id: str, name: str) -> None:
        with self.db:
            self.db.execute("UPDATE lists SET name = ? WHERE id = ?", (name, list_id))

    def delete_list(self, list_id: str) -> None:
        """The list, its tasks and its members rows (each delete is synced too: the server may not cascade)."""
        with self.db:
            self.db.execute("DELETE FROM tasks WHERE list_id = ?", (list_id,))
            self.db.execute("DELETE FROM list_members WHERE list_id = ?", (list_id,))
            self.db.execute("DELETE FROM lists WHERE id = ?", (list_id,))

    def add_task(self, list_id: str, title: str) -> str:
        task_id = str(uuid.uuid4())
        with self.db:
            self.db.execute("INSERT INTO tasks (id, list_id, title) VALUES (?, ?, ?)", (task_id, list_id, title))
        return task_id

    def rename_task(self, task_id: str, title: str) -> None:
        with self.db:
            self.db.execute("UPDATE tasks SET title = ? WHERE id = ?", (title, task_id))

    def mark_done(self, task_id: str, done: bool) -> None:
        with self.db:
            self.db.execute("UPDATE tasks SET done = ? WHERE id = ?", (done, task_id))

    def delete_task(self, task_id: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM tasks WHERE id = ?", (task_id,))

    def describe(self, table: str, key: str) -> str:
        """A row's name for the conflicts view: a task's title or a list's name, else its key."""
        column = {"tasks": "title", "lists": "name"}.get(table)
        if column is None:
            return key
        row = self.db.execute(f"SELECT {column} FROM {table} WHERE id = ?", (key,)).fetchone()
        return key[:8] if row is None else str(row[0])

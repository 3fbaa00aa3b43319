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
    name TEXT NOT NULL,
    owner TEXT
);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    list_id TEXT REFERENCES lists(id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    done BOOLEAN NOT NULL DEFAULT 0,
    priority INTEGER NOT NULL DEFAULT 0,
    notes TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS list_members (
    id TEXT PRIMARY KEY,
    list_id TEXT REFERENCES lists(id),
    user_id TEXT
);
"""
MODELS = {"lists": "todo.TodoList", "tasks": "todo.Task", "list_members": "todo.ListMember"}
DEVICE_TABLE = "todo_device"
"""Not synced: this device's settings (its user), kept in the device file."""
DEFAULT_USER = "alice"
"""The user of a device that was never given one: the user of the shipped server.toml's token-laptop and token-phone."""


def member_id(list_id: str, user: str) -> str:
    """A membership's key, the same on every device: sharing a list twice, or from two devices at once, is one row."""
    return f"{list_id}/{user}"


@dataclass(frozen=True)
class Task:
    id: str
    list_name: str
    title: str
    done: bool
    priority: int
    notes: str


@dataclass(frozen=True)
class ListInfo:
    id: str
    name: str
    owner: str | None
    members: tuple[str, ...]


class TodoApp:
    """One device's to-do database. Every method works offline; ``sync()`` needs the server."""

    def __init__(
        self,
        device: str | Path,
        server_url: str | None = None,
        auth_token: str | None = None,
        node_id: str | None = None,
        user: str | None = None,
    ) -> None:
        """``user`` is who this device syncs as (the owner of the lists it creates; on a server with ``[scopes]``
        it must be the token's user). Given, it is kept in the device file; left out, the kept one is used,
        else ``DEFAULT_USER``."""
        path = Path(device)
        path.parent.mkdir(parents=True, exist_ok=True)
        if user is not None and not user.strip():
            raise InvalidParameterError("the user must be a non-empty name")
        setup = sqlite3.connect(path)
        try:
            setup.executescript(SCHEMA)
            with setup:
                columns = {row[1] for row in setup.execute("PRAGMA table_info(lists)")}
                if "owner" not in columns:  # a device file from before lists had owners; the SDK syncs the new column
                    setup.execute("ALTER TABLE lists ADD COLUMN owner TEXT")
                setup.execute(f"CREATE TABLE IF NOT EXISTS {DEVICE_TABLE} (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
                if user is not None:
                    setup.execute(f"INSERT OR REPLACE INTO {DEVICE_TABLE} (name, value) VALUES ('user', ?)", (user,))
                row = setup.execute(f"SELECT value FROM {DEVICE_TABLE} WHERE name = 'user'").fetchone()
            self.user: str = DEFAULT_USER if row is None else str(row[0])
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
            self.db.execute("INSERT INTO lists (id, name, owner) VALUES (?, ?, ?)", (list_id, name, self.user))
        return list_id

    def list_id(self, name_or_id: str) -> str:
        row = self.db.execute("SELECT id FROM lists WHERE name = ? OR id = ?", (name_or_id, name_or_id)).fetchone()
        if row is None:
            raise InvalidParameterError(f"no list named {name_or_id!r}")
        return row[0]

    def list_name(self, list_id: str) -> str:
        row = self.db.execute("SELECT name FROM lists WHERE id = ?", (list_id,)).fetchone()
        return "" if row is None else str(row[0])

    def lists_with_members(self) -> list[ListInfo]:
        """Every list this device holds: its own, and those others shared with its user."""
        rows = self.db.execute("SELECT id, name, owner FROM lists ORDER BY name, id").fetchall()
        members: dict[str, list[str]] = {}
        for list_id, user in self.db.execute("SELECT list_id, user_id FROM list_members ORDER BY user_id"):
            members.setdefault(list_id, []).append(user)
        return [ListInfo(r[0], r[1], r[2], tuple(members.get(r[0], ()))) for r in rows]

    # -- sharing --
    def _owned(self, list_name: str) -> str:
        list_id = self.list_id(list_name)
        owner = self.db.execute("SELECT owner FROM lists WHERE id = ?", (list_id,)).fetchone()[0]
        if owner is not None and owner != self.user:
            raise InvalidParameterError(f"{list_name!r} is {owner}'s list: only its owner shares it")
        return list_id

    def share(self, list_name: str, user: str) -> str:
        """Let ``user`` see the list and its tasks (from their next sync); returns the list's id."""
        if not user.strip():
            raise InvalidParameterError("the user must be a non-empty name")
        list_id = self._owned(list_name)
        if user == self.user:
            raise InvalidParameterError(f"{list_name!r} is {user}'s own list already")
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO list_members (id, list_id, user_id) VALUES (?, ?, ?)",
                            (member_id(list_id, user), list_id, user))
        return list_id

    def unshare(self, list_name: str, user: str) -> bool:
        """Stop sharing the list with ``user``: their devices drop it on their next sync. ``False`` if it was not shared."""
        list_id = self._owned(list_name)
        with self.db:
            gone = self.db.execute("DELETE FROM list_members WHERE list_id = ? AND user_id = ?", (list_id, user))
        return gone.rowcount > 0

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

"""Command line for the to-do app: ``python -m examples.todo --device phone.db add "milk" --list Groceries``."""

from __future__ import annotations

import argparse
import sqlite3
import sys

from client_sdk import SyncError

from .app import TodoApp


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m examples.todo", description="An offline to-do list that syncs.")
    parser.add_argument("--device", required=True, help="this device's database file")
    parser.add_argument("--server", help="sync server URL, e.g. http://127.0.0.1:8000/sync/")
    parser.add_argument("--token", help="bearer token for the server")
    parser.add_argument("--node-id", help="this device's node id (first run only; kept in the file)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("new-list", help="create a list").add_argument("name")
    add = commands.add_parser("add", help="add a task")
    add.add_argument("title")
    add.add_argument("--list", default="Inbox", dest="list_name", help="created on first use (default: Inbox)")
    add.add_argument("--priority", type=int, default=0)
    add.add_argument("--notes", default="")
    commands.add_parser("list", help="show all tasks")
    edit = commands.add_parser("edit", help="change a task")
    edit.add_argument("task", help="id prefix or exact title")
    edit.add_argument("--title")
    edit.add_argument("--priority", type=int)
    edit.add_argument("--notes")
    commands.add_parser("done", help="mark a task done").add_argument("task")
    commands.add_parser("undone", help="mark a task not done").add_argument("task")
    commands.add_parser("delete", help="delete a task").add_argument("task")
    commands.add_parser("sync", help="sync with the server")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with TodoApp(args.device, server_url=args.server, auth_token=args.token, node_id=args.node_id) as app:
            return run(app, args)
    except SyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"error: cannot use {args.device} as a to-do database: {exc}", file=sys.stderr)
        return 1


def run(app: TodoApp, args: argparse.Namespace) -> int:
    if args.command == "new-list":
        print(app.add_list(args.name))
    elif args.command == "add":
        print(app.add(args.title, args.list_name, args.priority, args.notes))
    elif args.command == "list":
        tasks = app.tasks()
        for task in tasks:
            mark = "x" if task.done else " "
            print(f"[{mark}] {task.id[:8]}  {task.list_name}: {task.title}" + (f"  ({task.notes})" if task.notes else ""))
        if not tasks:
            print("(no tasks)")
    elif args.command == "edit":
        app.edit(args.task, title=args.title, priority=args.priority, notes=args.notes)
    elif args.command in ("done", "undone"):
        app.set_done(args.task, args.command == "done")
    elif args.command == "delete":
        app.delete(args.task)
    elif args.command == "sync":
        if app.client.transport is None:
            print("error: sync needs --server", file=sys.stderr)
            return 2
        result = app.sync()
        print("synced: " + ", ".join(f"{name} {count}" for name, count in result.summary().items() if count))
        for error in result.errors:
            print(f"  error on {error.get('key')}: {error.get('message')}", file=sys.stderr)
        return 0 if result.ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line for the to-do app: ``python -m examples.todo --device phone.db --node-id phone add "milk" --list Groceries``.

Run it from the repository root, or from anywhere with the root on ``PYTHONPATH``. The bearer token comes
from ``--token`` or the ``CLIENT_SDK_TOKEN`` environment variable. ``--user`` names who the device syncs as
(the owner of the lists it creates, the token's user on a server with ``[scopes]``); the device file keeps it,
so later commands may leave it out (never given: ``alice``, the user of the example's own tokens).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from pathlib import Path

from client_sdk import SyncError
from client_sdk.cli import TOKEN_VARIABLE

from .app import DEFAULT_USER, TodoApp


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every to-do program (this one, the window) takes for its device."""
    parser.add_argument("--device", required=True, help="this device's database file")
    parser.add_argument("--server", help="sync server URL, e.g. http://127.0.0.1:8000/sync/ (left out: offline only)")
    parser.add_argument("--token", help=f"bearer token for the server (default: ${TOKEN_VARIABLE})")
    parser.add_argument("--node-id", help="this device's node id: the first run on a new --device file sets it "
                                          "(a random one if left out), later ones may leave it out")
    parser.add_argument("--user", help="who this device syncs as: the owner of the lists it creates, and on a server "
                                       "with [scopes] the user of its token; kept in the --device file, so later "
                                       f"runs may leave it out (never given: {DEFAULT_USER})")


def device_problem(args: argparse.Namespace) -> str | None:
    """Why the device options cannot be used as given (a --node-id other than the file's), if they cannot."""
    stored = stored_node_id(Path(args.device))
    if args.node_id is None or stored is None or stored == args.node_id:
        return None
    return (f"{args.device} is node {stored!r}, not {args.node_id!r}: the first command on the file set its node id "
            "(with --node-id, or a random one without it) and it never changes. Leave --node-id out, "
            f"or start a new device file with --node-id {args.node_id} on its first command.")


def token_of(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get(TOKEN_VARIABLE) or None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m examples.todo", description="An offline to-do list that syncs.")
    add_device_arguments(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("new-list", help="create a list (owned by --user)").add_argument("name")
    commands.add_parser("lists", help="show the lists, each with its owner and who it is shared with")
    share = commands.add_parser("share", help="let another user see a list you own, and its tasks")
    share.add_argument("list", help="list name or id")
    share.add_argument("member", metavar="USER")
    unshare = commands.add_parser("unshare", help="stop sharing a list: that user's devices drop it on their next sync")
    unshare.add_argument("list", help="list name or id")
    unshare.add_argument("member", metavar="USER")
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
    problem = device_problem(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        with TodoApp(args.device, server_url=args.server, auth_token=token_of(args), node_id=args.node_id,
                     user=args.user) as app:
            return run(app, args)
    except SyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"error: cannot use {args.device} as a to-do database: {exc}", file=sys.stderr)
        return 1


def stored_node_id(device: Path) -> str | None:
    """The node id a device file already has (``None`` for a new file)."""
    if not device.is_file():
        return None
    try:
        connection = sqlite3.connect(f"{device.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = connection.execute("SELECT value FROM _sync_meta WHERE name = 'node_id'").fetchone()
        return None if row is None else str(row[0])
    except sqlite3.Error:
        return None
    finally:
        connection.close()


def run(app: TodoApp, args: argparse.Namespace) -> int:
    if args.command == "new-list":
        print(app.add_list(args.name))
    elif args.command == "lists":
        lists = app.lists_with_members()
        for item in lists:
            shared = f", shared with {', '.join(item.members)}" if item.members else ""
            print(f"{item.id[:8]}  {item.name}  (owner {item.owner or 'nobody'}{shared})")
        if not lists:
            print("(no lists)")
    elif args.command == "share":
        list_id = app.share(args.list, args.member)
        print(f"shared {list_id[:8]} with {args.member}: {app.list_name(list_id)}")
    elif args.command == "unshare":
        list_id = app.list_id(args.list)
        if app.unshare(args.list, args.member):
            print(f"unshared {list_id[:8]} from {args.member}: {app.list_name(list_id)}")
        else:
            print(f"{app.list_name(list_id)} was not shared with {args.member}")
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
        task_id = app.edit(args.task, title=args.title, priority=args.priority, notes=args.notes)
        print(f"edited {task_id[:8]}: {app.title(task_id)}")
    elif args.command in ("done", "undone"):
        task_id = app.set_done(args.task, args.command == "done")
        print(f"marked {task_id[:8]} {args.command}: {app.title(task_id)}")
    elif args.command == "delete":
        title = app.title(app.resolve(args.task))
        print(f"deleted {app.delete(args.task)[:8]}: {title}")
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

"""The to-do window: ``python -m examples.todo_gui --device laptop.db [--server URL --token T --node-id N --user U]``.

Without ``--server`` it works offline only. With it, it syncs in the background: on every edit, every
``--interval`` seconds, and as soon as the server answers again after being away. The bearer token comes
from ``--token`` or the ``CLIENT_SDK_TOKEN`` environment variable; ``--user`` is the CLI's (the owner of new
lists, kept in the device file). Run it from the repository root.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tkinter as tk
from pathlib import Path

from client_sdk import SyncError
from client_sdk.cli import TOKEN_VARIABLE
from examples.todo.__main__ import stored_node_id
from examples.todo.app import DEFAULT_USER

from .model import TodoModel
from .sync import SyncBridge, Timing
from .window import TodoWindow


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m examples.todo_gui", description="An offline to-do list that syncs, "
                                     "in a window.")
    parser.add_argument("--device", required=True, help="this device's database file")
    parser.add_argument("--server", help="sync server URL, e.g. http://127.0.0.1:8000/sync/ (left out: offline only)")
    parser.add_argument("--token", help=f"bearer token for the server (default: ${TOKEN_VARIABLE})")
    parser.add_argument("--node-id", help="this device's node id: set by the first run on a new --device file "
                                          "(a random one if left out)")
    parser.add_argument("--user", help="who this device syncs as: the owner of the lists it creates (the token's user "
                                       "on a server with [scopes]); kept in the --device file "
                                       f"(never given: {DEFAULT_USER})")
    parser.add_argument("--interval", type=float, default=Timing.interval,
                        help=f"seconds between syncs that pull others' edits (default: {Timing.interval:g})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stored = stored_node_id(Path(args.device))
    if args.node_id is not None and stored is not None and stored != args.node_id:
        print(f"error: {args.device} is node {stored!r}, not {args.node_id!r}; leave --node-id out", file=sys.stderr)
        return 2
    if args.interval <= 0:
        print("error: --interval must be a positive number of seconds", file=sys.stderr)
        return 2
    token = args.token or os.environ.get(TOKEN_VARIABLE) or None
    try:
        root = tk.Tk()
    except tk.TclError as exc:
        print(f"error: cannot open a window: {exc}", file=sys.stderr)
        return 1
    try:
        model = TodoModel(args.device, server_url=args.server, auth_token=token, node_id=args.node_id, user=args.user)
    except (SyncError, sqlite3.Error) as exc:
        root.destroy()
        print(f"error: cannot use {args.device} as a to-do database: {exc}", file=sys.stderr)
        return 1
    with model:
        TodoWindow(root, model, SyncBridge(model.client, Timing(interval=args.interval)),
                   device=model.client.node_id)
        root.mainloop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

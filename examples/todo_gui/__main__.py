"""The to-do window: ``python -m examples.todo_gui --device laptop.db [--server URL --token T --node-id N --user U]``.

Without ``--server`` it works offline only. With it, it syncs in the background: on every edit, every
``--interval`` seconds, and as soon as the server answers again after being away. The bearer token comes
from ``--token`` or the ``CLIENT_SDK_TOKEN`` environment variable; ``--user`` is the CLI's (the owner of new
lists, kept in the device file). Run it from the repository root.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tkinter as tk

from client_sdk import SyncError
from examples.todo.__main__ import add_device_arguments, device_problem, token_of

from .model import TodoModel
from .sync import SyncBridge, Timing
from .window import TodoWindow


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m examples.todo_gui", description="An offline to-do list that syncs, "
                                     "in a window.")
    add_device_arguments(parser)
    parser.add_argument("--interval", type=float, default=Timing.interval,
                        help=f"seconds between syncs that pull others' edits (default: {Timing.interval:g})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = device_problem(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.interval <= 0:
        print("error: --interval must be a positive number of seconds", file=sys.stderr)
        return 2
    try:
        root = tk.Tk()
    except tk.TclError as exc:
        print(f"error: cannot open a window: {exc}", file=sys.stderr)
        return 1
    try:
        model = TodoModel(args.device, server_url=args.server, auth_token=token_of(args), node_id=args.node_id, user=args.user)
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

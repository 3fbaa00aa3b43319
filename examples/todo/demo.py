"""The to-do story, end to end on this machine (``make demo``).

A server_stub starts on 127.0.0.1. Two devices share a list, then go offline
(the server stops): one renames a task, the other marks it done and deletes
another task. The server comes back, both sync, and the two lists are shown
side by side. Exits 1 if the devices did not converge with both edits kept.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from client_sdk import DatabaseResult

from .app import Task, TodoApp

SERVER_CONFIG = (Path(__file__).resolve().parent / "server.toml").read_text(encoding="utf-8")
"""The to-do app's server config (its database lands beside the copy the demo writes)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_server(workdir: Path, port: int) -> Iterator[None]:
    """server_stub in a subprocess on 127.0.0.1:``port``, from once /health answers to the end of the block."""
    config = workdir / "server.toml"
    config.write_text(SERVER_CONFIG)
    process = subprocess.Popen(
        [sys.executable, "-m", "server_stub", "--config", str(config), "--port", str(port), "--log-level", "warning"],
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server_stub did not start (exit code {process.poll()})")
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


def show(title: str, *devices: tuple[str, TodoApp]) -> None:
    print(f"\n{title}")
    for name, app in devices:
        print(f"  {name}:")
        tasks = app.tasks()
        for task in tasks:
            print(f"    [{'x' if task.done else ' '}] {task.title:<12} ({task.list_name})")
        if not tasks:
            print("    (no tasks)")


def describe(result: DatabaseResult) -> str:
    counts = result.summary()
    return f"pushed {counts['pushed']}, received {counts['applied'] + counts['created'] + counts['deleted']}, " \
           f"{counts['rounds']} round(s)"


def verdict(laptop: list[Task], phone: list[Task]) -> str | None:
    """What went wrong, or ``None`` when both devices hold the same list with every edit kept."""
    if laptop != phone:
        return "the two devices hold different lists"
    titles = {task.title: task for task in laptop}
    if "oat milk" not in titles or not titles["oat milk"].done:
        return "the rename and the 'done' mark were not both kept"
    if "bread" in titles:
        return "the delete of 'bread' was lost"
    if "eggs" not in titles:
        return "'eggs', which nobody touched, went missing"
    return None


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="todo-demo-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        url = f"http://127.0.0.1:{port}/sync/"
        with TodoApp(workdir / "laptop.db", server_url=url, auth_token="token-laptop", node_id="laptop") as laptop, \
                TodoApp(workdir / "phone.db", server_url=url, auth_token="token-phone", node_id="phone") as phone:
            problem = story(workdir, port, laptop, phone)
    print()
    if problem is None:
        print(textwrap.fill("Converged: both devices hold the same list, with the rename, the 'done' mark "
                            "and the delete all kept.", 79))
        return 0
    print(f"NOT converged: {problem}")
    return 1


def story(workdir: Path, port: int, laptop: TodoApp, phone: TodoApp) -> str | None:
    """Share a list, edit it on both devices while the server is away, sync; return the verdict."""
    with running_server(workdir, port):
        laptop.add_list("Groceries")
        laptop.add("milk", "Groceries")
        laptop.add("bread", "Groceries")
        laptop.add("eggs", "Groceries")
        print(f"laptop syncs: {describe(laptop.sync())}")
        print(f"phone syncs:  {describe(phone.sync())}")
        show("Both devices start from the same list:", ("laptop", laptop), ("phone", phone))

    print("\nThe server goes away. Both devices keep working offline:")
    print(f"  server reachable from the laptop? {laptop.client.reachable()}")
    laptop.edit("milk", title="oat milk")
    print("  laptop renames 'milk' to 'oat milk'")
    phone.set_done("milk")
    print("  phone marks 'milk' done")
    phone.delete("bread")
    print("  phone deletes 'bread'")
    print(f"  pending changes: laptop {len(laptop.client.pending_changes())}, "
          f"phone {len(phone.client.pending_changes())}")

    with running_server(workdir, port):
        print("\nThe server is back; both devices reconnect and sync:")
        print(f"  phone syncs:  {describe(phone.sync())}")
        print(f"  laptop syncs: {describe(laptop.sync())}")
        print(f"  phone syncs:  {describe(phone.sync())}")
        show("After sync:", ("laptop", laptop), ("phone", phone))
    return verdict(laptop.tasks(), phone.tasks())


if __name__ == "__main__":
    sys.exit(main())

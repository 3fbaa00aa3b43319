"""The to-do story, end to end on this machine (``make demo``).

A server_stub starts on 127.0.0.1. Two devices share a list, then go offline
(the server stops): one renames a task, the other marks it done and deletes
another task. The server comes back, both sync, and the two lists are shown
side by side. Then a second user, bob, on his own phone, makes a list that
alice's devices do not see until he shares it with her, and drop once he
unshares it (the server's [scopes] in examples/todo/server.toml). Exits 1 if
the devices did not converge with both edits kept, or if alice saw bob's list
when she should not have (or did not when she should have).
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
    refused = f", {counts['errors']} refused by the server" if counts["errors"] else ""
    return f"pushed {counts['pushed']}, received {counts['applied'] + counts['created'] + counts['deleted']}, " \
           f"{counts['rounds']} round(s){refused}"


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
        with TodoApp(workdir / "laptop.db", server_url=url, auth_token="token-laptop", node_id="laptop",
                     user="alice") as laptop, \
                TodoApp(workdir / "phone.db", server_url=url, auth_token="token-phone", node_id="phone",
                        user="alice") as phone:
            problem = story(workdir, port, laptop, phone)
            print()
            if problem is None:
                print(textwrap.fill("Converged: both devices hold the same list, with the rename, the 'done' mark "
                                    "and the delete all kept.", 79))
            else:
                print(f"NOT converged: {problem}")
            with TodoApp(workdir / "bob.db", server_url=url, auth_token="token-bob", node_id="bob-phone",
                         user="bob") as bob:
                failures = sharing_story(workdir, port, laptop, phone, bob)
    print()
    if failures:
        print("Sharing did NOT go as expected:")
        for failure in failures:
            print(f"  - {failure}")
    else:
        print(textwrap.fill("Private until shared: alice's devices never saw bob's list before he shared it, "
                            "saw it with its tasks while it was shared, and dropped it once he unshared it.", 79))
    return 0 if problem is None and not failures else 1


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



PRIVATE = "Birthday"
"""Bob's list."""


def list_names(app: TodoApp) -> set[str]:
    return {item.name for item in app.lists_with_members()}


def titles_in(app: TodoApp, list_name: str) -> set[str]:
    return {task.title for task in app.tasks() if task.list_name == list_name}


def sharing_story(workdir: Path, port: int, laptop: TodoApp, phone: TodoApp, bob: TodoApp) -> list[str]:
    """Bob's list: private, shared with alice, unshared; returns the expectations that did not hold."""
    failures: list[str] = []
    alice = (("laptop (alice)", laptop), ("phone (alice)", phone))
    names = {id(app): name for name, app in (("bob", bob), *alice)}

    def expect(condition: bool, claim: str) -> None:
        print(f"  {'ok' if condition else 'FAILED'}: {claim}")
        if not condition:
            failures.append(claim)

    def sync(*apps: TodoApp) -> None:
        for app in apps:
            print(f"  {names[id(app)]} syncs: {describe(app.sync())}")

    with running_server(workdir, port):
        print("\nA second user, bob, syncs his own phone with the same server (token-bob, user bob):")
        bob.add_list(PRIVATE)
        bob.add("cake", PRIVATE)
        bob.add("balloons", PRIVATE)
        print(f"  bob creates a private list '{PRIVATE}' with 'cake' and 'balloons'")
        sync(bob, laptop, phone)
        show("Bob's list is private: alice's devices do not see it, and bob does not see hers:", ("bob", bob), *alice)
        expect(all(PRIVATE not in list_names(app) for _, app in alice), f"alice's devices do not see '{PRIVATE}'")
        expect(list_names(bob) == {PRIVATE}, "bob does not see alice's 'Groceries'")

        bob.share(PRIVATE, "alice")
        print(f"\nbob shares '{PRIVATE}' with alice; alice's phone adds 'candles' to it:")
        sync(bob, phone)
        phone.add("candles", PRIVATE)
        sync(phone, laptop, bob)
        show(f"Shared: alice's devices hold '{PRIVATE}' with its tasks, and bob gets alice's 'candles':",
             ("bob", bob), *alice)
        wanted = {"cake", "balloons", "candles"}
        expect(all(titles_in(app, PRIVATE) == wanted for _, app in alice),
               f"alice's devices hold '{PRIVATE}' with cake, balloons and candles")
        expect(titles_in(bob, PRIVATE) == wanted, "bob holds the task alice added to his list")

        bob.unshare(PRIVATE, "alice")
        print(f"\nbob unshares '{PRIVATE}' from alice:")
        sync(bob, laptop, phone)
        show(f"Unshared: alice's devices dropped '{PRIVATE}' on their next sync; bob keeps it:", ("bob", bob), *alice)
        expect(all(PRIVATE not in list_names(app) and not titles_in(app, PRIVATE) for _, app in alice),
               f"alice's devices no longer hold '{PRIVATE}' or its tasks")
        expect(titles_in(bob, PRIVATE) == wanted, f"bob keeps '{PRIVATE}' with all its tasks")
        expect(phone.tasks() == laptop.tasks() and {task.title for task in laptop.tasks()} == {"oat milk", "eggs"},
               "alice's own 'Groceries' is as it was")
    return failures

if __name__ == "__main__":
    sys.exit(main())

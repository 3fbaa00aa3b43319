"""The to-do example and the README's commands, driven as a user drives them: subprocesses, real files,
a real server on 127.0.0.1."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from examples.todo.app import MODELS, SCHEMA, Task
from examples.todo.demo import verdict
from tests.conftest import Server, rows
from tests.loopback import free_port
from tests.serverdb import Database, server_rows

from .conftest import ROOT, run, wait_until

README = (ROOT / "README.md").read_text(encoding="utf-8")


def todo(device: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("-m", "examples.todo", "--device", str(device), *args, check=check)


def listing(device: Path) -> list[str]:
    return todo(device, "list").stdout.splitlines()


# -- the to-do app --

def test_the_todo_app_works_fully_offline(tmp_path: Path) -> None:
    phone = tmp_path / "phone.db"
    assert listing(phone) == ["(no tasks)"]
    milk = todo(phone, "add", "milk").stdout.strip()[:8]
    bread = todo(phone, "add", "bread", "--list", "Groceries", "--notes", "wholemeal").stdout.strip()[:8]
    stamps = todo(phone, "add", "stamps", "--list", "Errands").stdout.strip()[:8]
    assert listing(phone) == [
        f"[ ] {stamps}  Errands: stamps",
        f"[ ] {bread}  Groceries: bread  (wholemeal)",
        f"[ ] {milk}  Inbox: milk",
    ]

    todo(phone, "edit", milk, "--title", "oat milk")
    todo(phone, "done", "oat milk")
    todo(phone, "delete", "stamps")
    assert listing(phone) == [f"[ ] {bread}  Groceries: bread  (wholemeal)", f"[x] {milk}  Inbox: oat milk"]
    todo(phone, "undone", "oat milk")
    assert listing(phone)[1] == f"[ ] {milk}  Inbox: oat milk"

    no_server = todo(phone, "sync", check=False)
    assert no_server.returncode == 2 and no_server.stderr == "error: sync needs --server\n"
    unknown = todo(phone, "done", "caviar", check=False)
    assert unknown.returncode == 1 and "matches 0 tasks" in unknown.stderr

    away = f"http://127.0.0.1:{free_port()}/sync/"  # a server configured but unreachable: still fine offline
    todo(phone, "--server", away, "add", "tea")
    assert listing(phone)[-1].endswith("Inbox: tea")


@pytest.mark.sqlite_only("the to-do app's schema is SQLite's (ON DELETE CASCADE, BOOLEAN DEFAULT 0)")
def test_two_devices_sync_their_edits_through_the_server(server: Server, server_database: Database, tmp_path: Path) -> None:
    url = server(schema=SCHEMA, models=MODELS)
    laptop, phone = tmp_path / "laptop.db", tmp_path / "phone.db"

    todo(laptop, "--server", url, "--node-id", "laptop", "add", "milk", "--list", "Groceries")
    todo(laptop, "add", "bread", "--list", "Groceries")
    assert todo(laptop, "--server", url, "sync").stdout == "synced: pushed 3, rounds 1\n"
    todo(phone, "--server", url, "--node-id", "phone", "sync")
    assert listing(phone) == listing(laptop)

    todo(laptop, "edit", "milk", "--title", "oat milk")  # both offline
    todo(phone, "done", "milk")
    todo(phone, "delete", "bread")
    for device in (phone, laptop, phone):
        todo(device, "--server", url, "sync")

    assert listing(laptop) == listing(phone)
    [line] = listing(laptop)
    assert line.startswith("[x]") and line.endswith("Groceries: oat milk")
    assert [row[1:3] for row in server_rows(server_database, "tasks").values()] == [("oat milk", 1)]


# -- the demo --

def test_the_readme_demo_command_tells_the_story_and_converges() -> None:
    """``make demo`` as the README says (``-o`` keeps make from reinstalling the virtualenv it runs in)."""
    if shutil.which("make"):
        done = subprocess.run(["make", "-s", "-o", ".venv/.installed", "demo", f"PY={sys.executable}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    else:
        done = run("-m", "examples.todo.demo", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "server reachable from the laptop? False" in out
    assert "laptop renames 'milk' to 'oat milk'" in out
    assert "phone marks 'milk' done" in out and "phone deletes 'bread'" in out
    assert "Converged: both devices hold the same list" in out
    after = out.split("After sync:")[1].split("A second user")[0]
    assert after.count("[x] oat milk") == 2 and "bread" not in after

    # the second user: bob's list hidden from alice's devices, then shared with them, then gone from them
    private, shared, unshared = (out.split(heading)[1].split("\n\n")[0] for heading in
                                 ("Bob's list is private", "Shared:", "Unshared:"))
    for step in (private, shared, unshared):
        bob, alice = step.split("  laptop (alice):")
        assert bob.count("(Birthday)") == 3 if step is not private else bob.count("(Birthday)") == 2
        assert "Groceries" not in bob and alice.count("(Groceries)") == 4  # two tasks on each of alice's devices
    assert "(Birthday)" not in private.split("  laptop (alice):")[1]
    assert shared.split("  laptop (alice):")[1].count("(Birthday)") == 6  # cake, balloons, candles on both devices
    assert "(Birthday)" not in unshared.split("  laptop (alice):")[1]
    assert "FAILED" not in out and out.count("  ok: ") == 7
    assert out.rstrip().endswith("dropped it once he unshared it.")


def test_the_demo_verdict_fails_when_devices_differ_or_an_edit_is_lost() -> None:
    kept = [Task("1", "Groceries", "oat milk", True, 0, ""), Task("3", "Groceries", "eggs", False, 0, "")]
    assert verdict(kept, list(kept)) is None
    assert verdict(kept, kept[:1]) == "the two devices hold different lists"
    renamed_only = [Task("1", "Groceries", "oat milk", False, 0, ""), kept[1]]
    assert verdict(renamed_only, renamed_only) == "the rename and the 'done' mark were not both kept"
    undeleted = [*kept, Task("2", "Groceries", "bread", False, 0, "")]
    assert verdict(undeleted, undeleted) == "the delete of 'bread' was lost"


# -- the README's embedding snippet against the README's server command --

def readme_block(language: str, after: str) -> str:
    section = README.split(after, 1)[1]
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match, f"no {language} block after {after!r} in README.md"
    return match.group(1)


@contextmanager
def server_stub_process(config: Path, port: int, cwd: Path = ROOT) -> Iterator[None]:
    """The README's server command, with a free port instead of 8000."""
    process = subprocess.Popen([sys.executable, "-m", "server_stub", "--config", str(config),
                                "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                               cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: process.poll() is not None or _healthy(port), timeout=30, what="server_stub to start")
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        yield
    finally:
        process.terminate()
        process.wait(10)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_the_readme_snippet_syncs_with_the_readme_server(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "server.toml"
    config.write_text(readme_block("toml", "## Running the server"))
    snippet = readme_block("python", "## Embedding the SDK")
    assert "http://127.0.0.1:8000/sync/" in snippet
    script = tmp_path / "snippet.py"
    script.write_text(snippet.replace("127.0.0.1:8000", f"127.0.0.1:{port}"))

    with server_stub_process(config, port):
        first = run(str(script), cwd=tmp_path)
        again = run(str(script), cwd=tmp_path)
    assert first.stdout.startswith("{'pushed': 1,") and first.stdout.rstrip().endswith("[] []")
    assert again.stdout.startswith("{'pushed': 0,")
    assert rows(tmp_path / "notes-server.db") == {"2f1c": ("milk", 0)}


# -- the README's to-do commands, in the README's order, from another directory --

def todo_elsewhere(cwd: Path, *args: str, token: str | None = "token-phone",
                   check: bool = True) -> subprocess.CompletedProcess[str]:
    """``python -m examples.todo ...`` typed in ``cwd`` with the repository root on PYTHONPATH, as the README says."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CLIENT_SDK_TOKEN", None)
    if token is not None:
        env["CLIENT_SDK_TOKEN"] = token
    done = subprocess.run([sys.executable, "-m", "examples.todo", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert not check or done.returncode == 0, done.stdout + done.stderr
    return done


def test_the_readme_todo_commands_work_in_order_from_another_directory(tmp_path: Path) -> None:
    shipped = ROOT / "examples" / "todo" / "server.toml"
    assert "python -m server_stub --config examples/todo/server.toml" in README
    config_dir, home = tmp_path / "config", tmp_path / "home"
    config_dir.mkdir()
    home.mkdir()
    config = config_dir / "server.toml"
    shutil.copy(shipped, config)  # a copy: the test must not write beside the shipped one
    port = free_port()
    url = f"http://127.0.0.1:{port}/sync/"
    with server_stub_process(config, port, cwd=home):
        added = todo_elsewhere(home, "--device", "phone.db", "--node-id", "phone", "add", "milk", "--list", "Groceries")
        milk = added.stdout.strip()[:8]
        assert todo_elsewhere(home, "--device", "phone.db", "list").stdout == f"[ ] {milk}  Groceries: milk\n"
        assert todo_elsewhere(home, "--device", "phone.db", "done", "milk").stdout == f"marked {milk} done: milk\n"
        synced = todo_elsewhere(home, "--device", "phone.db", "--server", url, "sync")
        assert synced.stdout == "synced: pushed 2, rounds 1\n"
        assert todo_elsewhere(home, "--device", "phone.db", "--node-id", "phone", "--server", url, "sync").returncode == 0

        refused = todo_elsewhere(home, "--device", "phone.db", "--server", url, "sync", token="token-laptop", check=False)
        assert refused.returncode == 1 and ("401" in refused.stderr or "403" in refused.stderr)

        # the order the README used to show: a first command without --node-id, a later one with it
        todo_elsewhere(home, "--device", "tablet.db", "add", "bread")
        mixed = todo_elsewhere(home, "--device", "tablet.db", "--node-id", "phone", "--server", url, "sync", check=False)
        assert mixed.returncode == 2
        assert "the first command on the file set its node id" in mixed.stderr
        assert "--node-id phone on its first command" in mixed.stderr
    assert (config_dir / "todo-server.db").is_file() and not (home / "todo-server.db").exists()
    assert [row[1:3] for row in rows(config_dir / "todo-server.db", "tasks").values()] == [("milk", 1)]


def test_todo_commands_say_what_they_did_and_a_list_name_is_not_taken_twice(tmp_path: Path) -> None:
    phone = tmp_path / "phone.db"
    milk = todo(phone, "add", "milk", "--list", "Groceries").stdout.strip()[:8]
    again = todo(phone, "new-list", "Groceries", check=False)
    assert again.returncode == 1 and again.stderr == "error: a list named 'Groceries' exists already\n"
    assert todo(phone, "edit", milk, "--title", "oat milk").stdout == f"edited {milk}: oat milk\n"
    assert todo(phone, "done", "oat milk").stdout == f"marked {milk} done: oat milk\n"
    assert todo(phone, "undone", milk).stdout == f"marked {milk} undone: oat milk\n"
    assert todo(phone, "delete", milk).stdout == f"deleted {milk}: oat milk\n"
    assert listing(phone) == ["(no tasks)"]


def test_the_readme_and_the_result_docstring_explain_every_count() -> None:
    from client_sdk.engine.results import KEY_LISTS, DatabaseResult

    doc = DatabaseResult.__doc__ or ""
    for kind in KEY_LISTS:
        assert f"| `{kind}` |" in README, kind
        assert f"``{kind}``" in doc, kind
    assert "a pulled new row is *applied*, not created" in README
    assert "progress=" in README and "on_phase=" in README

"""The to-do example's users (issue #17): ``--user``, ``share`` / ``unshare`` and ``lists``, driven as
subprocesses, against a server_stub running a copy of examples/todo/server.toml (its tokens and [scopes])."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loopback import free_port

from .conftest import ROOT
from .test_todo_and_readme import server_stub_process, todo

PHONE = ("--node-id", "phone")
"""alice's phone, as the shipped server.toml names it."""
BOB = ("--node-id", "bob-phone", "--user", "bob")
TOKENS = {"phone.db": "token-phone", "bob.db": "token-bob"}


@pytest.fixture
def example_server(tmp_path: Path) -> Iterator[str]:
    """server_stub on a copy of the example's server.toml (its database lands beside the copy); yields the URL."""
    config_dir = tmp_path / "server"
    config_dir.mkdir()
    shutil.copy(ROOT / "examples" / "todo" / "server.toml", config_dir / "server.toml")
    port = free_port()
    with server_stub_process(config_dir / "server.toml", port, cwd=tmp_path):
        yield f"http://127.0.0.1:{port}/sync/"


def lists(device: Path) -> list[str]:
    """``lists`` without the id column."""
    return [line.split("  ", 1)[1] for line in todo(device, "lists").stdout.splitlines() if line != "(no lists)"]


def tasks(device: Path) -> list[str]:
    """``list`` without the marks and ids: ``List: title`` lines."""
    return [line.split("  ", 1)[1] for line in todo(device, "list").stdout.splitlines() if line != "(no tasks)"]


def sync(device: Path, url: str, check: bool = True) -> None:
    """``sync`` with the device's token (a device file keeps its node id and user, not its token)."""
    todo(device, "--server", url, "--token", TOKENS[device.name], "sync", check=check)


def test_the_user_owns_new_lists_and_the_device_file_keeps_it(tmp_path: Path) -> None:
    bob, alice = tmp_path / "bob.db", tmp_path / "alice.db"
    todo(bob, "--user", "bob", "add", "cake", "--list", "Birthday")
    todo(bob, "new-list", "Garage")  # no --user: the device file's
    assert lists(bob) == ["Birthday  (owner bob)", "Garage  (owner bob)"]
    todo(alice, "add", "milk", "--list", "Groceries")  # never given: alice, the user of the example's tokens
    assert lists(alice) == ["Groceries  (owner alice)"]

    shared = todo(bob, "share", "Birthday", "alice")
    assert shared.stdout.startswith("shared ") and shared.stdout.endswith(" with alice: Birthday\n")
    assert todo(bob, "share", "Birthday", "alice").returncode == 0  # sharing twice is one membership
    todo(bob, "share", "Birthday", "carol")
    assert lists(bob) == ["Birthday  (owner bob, shared with alice, carol)", "Garage  (owner bob)"]
    assert todo(bob, "unshare", "Birthday", "carol").stdout.endswith(" from carol: Birthday\n")
    assert todo(bob, "unshare", "Birthday", "carol").stdout == "Birthday was not shared with carol\n"
    assert lists(bob)[0] == "Birthday  (owner bob, shared with alice)"

    own = todo(bob, "share", "Garage", "bob", check=False)
    assert own.returncode == 1 and own.stderr == "error: 'Garage' is bob's own list already\n"
    missing = todo(bob, "share", "Attic", "alice", check=False)
    assert missing.returncode == 1 and missing.stderr == "error: no list named 'Attic'\n"
    assert todo(bob, "--user", "", "list", check=False).stderr == "error: the user must be a non-empty name\n"


def test_a_device_file_from_before_owners_gains_the_column_and_keeps_its_lists(tmp_path: Path) -> None:
    device = tmp_path / "old.db"
    old = sqlite3.connect(device)
    old.executescript("CREATE TABLE lists (id TEXT PRIMARY KEY, name TEXT NOT NULL);"
                      "INSERT INTO lists VALUES ('l1', 'Groceries');")
    old.close()
    todo(device, "--user", "bob", "new-list", "Garage")
    assert lists(device) == ["Garage  (owner bob)", "Groceries  (owner nobody)"]
    assert todo(device, "share", "Groceries", "alice").returncode == 0  # a list with no owner is anyone's to share


def test_a_list_stays_private_until_shared_and_leaves_once_unshared(example_server: str, tmp_path: Path) -> None:
    url = example_server
    bob, phone = tmp_path / "bob.db", tmp_path / "phone.db"
    todo(bob, "--server", url, *BOB, "add", "cake", "--list", "Birthday")
    todo(bob, "add", "balloons", "--list", "Birthday")
    todo(phone, "--server", url, *PHONE, "add", "milk", "--list", "Groceries")
    for device in (bob, phone, bob):
        sync(device, url)
    assert tasks(phone) == ["Groceries: milk"] and lists(phone) == ["Groceries  (owner alice)"]
    assert tasks(bob) == ["Birthday: balloons", "Birthday: cake"]  # and bob does not see alice's list either

    todo(bob, "share", "Birthday", "alice")
    sync(bob, url)
    sync(phone, url)
    assert tasks(phone) == ["Birthday: balloons", "Birthday: cake", "Groceries: milk"]
    assert lists(phone) == ["Birthday  (owner bob, shared with alice)", "Groceries  (owner alice)"]
    refused = todo(phone, "share", "Birthday", "carol", check=False)  # only the owner shares
    assert refused.returncode == 1 and refused.stderr == "error: 'Birthday' is bob's list: only its owner shares it\n"
    todo(phone, "add", "candles", "--list", "Birthday")  # a member writes to the shared list
    sync(phone, url)
    sync(bob, url)
    assert tasks(bob) == ["Birthday: balloons", "Birthday: cake", "Birthday: candles"]

    todo(bob, "unshare", "Birthday", "alice")
    sync(bob, url)
    sync(phone, url)
    assert tasks(phone) == ["Groceries: milk"] and lists(phone) == ["Groceries  (owner alice)"]
    assert tasks(bob) == ["Birthday: balloons", "Birthday: cake", "Birthday: candles"]


def test_unsharing_leaves_nothing_pending_on_the_members_devices(example_server: str, tmp_path: Path) -> None:
    url = example_server
    bob, phone = tmp_path / "bob.db", tmp_path / "phone.db"
    todo(bob, "--server", url, *BOB, "add", "cake", "--list", "Birthday")
    todo(bob, "share", "Birthday", "alice")
    sync(bob, url)
    todo(phone, "--server", url, "--token", "token-phone", *PHONE, "sync")
    todo(bob, "unshare", "Birthday", "alice")
    sync(bob, url)
    synced = todo(phone, "--server", url, "--token", "token-phone", "sync", check=False)
    assert synced.returncode == 0, synced.stderr
    todo(bob, "share", "Birthday", "alice")
    for device in (bob, phone, bob):
        sync(device, url, check=False)
    assert tasks(bob) == ["Birthday: cake"]


def test_a_user_other_than_the_tokens_cannot_push_lists(example_server: str, tmp_path: Path) -> None:
    """On a server with [scopes], --user must be the token's user: bob's token writing alice's list is refused."""
    bob = tmp_path / "bob.db"
    todo(bob, "--server", example_server, "--token", "token-bob", "--node-id", "bob-phone", "--user", "alice",
         "add", "cake", "--list", "Birthday")
    synced = todo(bob, "--server", example_server, "--token", "token-bob", "sync", check=False)
    assert synced.returncode == 1 and "outside your scope" in synced.stderr

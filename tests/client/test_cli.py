"""The ``client-sdk`` command, run as a user runs it: a subprocess on a real file against a real server."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from client_sdk import SyncClient
from client_sdk.protocol.hlc import system_ms, wall_of
from tests.conftest import Device, Server, rows
from tests.loopback import free_port
from tests.serverdb import Database, server_rows

from .conftest import ROOT, run, wait_until

CLI = ("-m", "client_sdk.cli")


def client_sdk(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(*CLI, *args, check=check)


def write(client: SyncClient, sql: str) -> None:
    with client.connection:
        client.connection.execute(sql)


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "client-sdk"
    if not script.exists():
        pytest.skip("the package is not installed in this interpreter's environment")
    done = subprocess.run([str(script), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "status" in done.stdout and "sync" in done.stdout and "conflicts" in done.stdout


def test_status_then_sync_with_progress_then_status_again(tmp_path: Path, server: Server, device: Device) -> None:
    url = server()
    other = device("phone", url)
    for n in range(3):
        write(other, f"INSERT INTO notes VALUES ('remote-{n}', 'from the phone', 0)")
    other.sync()
    laptop = device("laptop")
    write(laptop, "INSERT INTO notes VALUES ('local-1', 'milk', 0)")
    write(laptop, "DELETE FROM notes WHERE id = 'local-1'")
    write(laptop, "INSERT INTO notes VALUES ('local-2', 'bread', 0)")
    laptop.close()
    db = str(laptop.path)

    before = client_sdk("status", "--db", db).stdout
    assert "node id:          laptop" in before
    assert "pending changes:  2" in before
    assert "delete notes local-1" in " ".join(before.split())
    assert "upsert notes local-2" in " ".join(before.split())
    assert "last sync:        never" in before
    assert "conflicts logged: 0" in before

    synced = client_sdk("sync", "--db", db, "--server", url)
    assert synced.stdout == "synced: pushed 2, applied 3, rounds 2\n"
    assert "round 1: exchanging" in synced.stderr
    assert "applying [##############################] 3/3" in synced.stderr

    after = client_sdk("status", "--db", db).stdout
    assert "pending changes:  0" in after
    assert " ok\n" in after.split("last sync:")[1]


def test_a_dry_run_sync_moves_nothing(server: Server, device: Device) -> None:
    url = server()
    laptop = device("laptop")
    write(laptop, "INSERT INTO notes VALUES ('n1', 'milk', 0)")
    laptop.close()
    dry = client_sdk("--db", str(laptop.path), "sync", "--server", url, "--dry-run")  # --db may come first
    assert dry.stdout.startswith("would move: pushed 1")
    assert "pending changes:  1" in client_sdk("status", "--db", str(laptop.path)).stdout


def test_a_dry_run_lists_the_first_ten_keys_of_each_kind_and_table(server: Server, device: Device) -> None:
    url = server()
    phone = device("phone", url)
    for n in range(12):
        write(phone, f"INSERT INTO notes VALUES ('r{n:02}', 'from the phone', 0)")
    phone.sync()
    laptop = device("laptop")
    write(laptop, "INSERT INTO notes VALUES ('mine', 'milk', 0)")
    laptop.close()
    lines = client_sdk("sync", "--db", str(laptop.path), "--server", url, "--dry-run").stdout.splitlines()
    assert lines[0] == "would move: pushed 1, created 12, rounds 1"
    assert lines[1:] == ["  pushed notes: mine",
                         "  created notes: " + ", ".join(f"r{n:02}" for n in range(10)) + " ... and 2 more"]
    assert rows(laptop.path) == {"mine": ("milk", 0)}


def test_the_token_comes_from_client_sdk_token_and_is_never_required(
    server: Server, device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server(tokens={"secret": frozenset({"laptop"})})
    laptop = device("laptop")
    write(laptop, "INSERT INTO notes VALUES ('n1', 'milk', 0)")
    laptop.close()
    db = str(laptop.path)
    assert "CLIENT_SDK_TOKEN" in client_sdk("sync", "--help").stdout
    monkeypatch.delenv("CLIENT_SDK_TOKEN", raising=False)
    refused = client_sdk("sync", "--db", db, "--server", url, "--retries", "0", check=False)
    assert refused.returncode == 1 and "401" in refused.stderr
    monkeypatch.setenv("CLIENT_SDK_TOKEN", "secret")
    assert client_sdk("sync", "--db", db, "--server", url).stdout == "synced: pushed 1, rounds 1\n"
    monkeypatch.setenv("CLIENT_SDK_TOKEN", "wrong")
    write_db(db, "UPDATE notes SET body = 'oat milk'")
    assert client_sdk("sync", "--db", db, "--server", url, "--token", "secret").stdout == "synced: pushed 1, rounds 1\n"


def write_db(db: str, sql: str) -> None:
    connection = sqlite3.connect(db)
    try:
        with connection:
            connection.execute(sql)
    finally:
        connection.close()


def test_resync_downloads_everything_again_and_keeps_a_pending_edit(
    server: Server, server_database: Database, device: Device
) -> None:
    """A device whose checkpoint was damaged misses the other devices' edits; ``resync`` brings them back
    and pushes the edit it had pending."""
    url = server()
    laptop, phone = device("laptop", url), device("phone", url)
    for n in range(3):
        write(laptop, f"INSERT INTO notes VALUES ('n{n}', 'note {n}', 0)")
    laptop.sync()
    phone.sync()
    laptop.close()
    db = str(laptop.path)
    # the damage: a checkpoint a minute ahead of the server's clock
    write_db(db, "UPDATE _sync_meta SET value = value + (60000 << 16) WHERE name = 'checkpoint'")
    write(phone, "UPDATE notes SET body = 'edited on the phone' WHERE id = 'n1'")
    phone.sync()
    client_sdk("sync", "--db", db, "--server", url)
    assert rows(laptop.path)["n1"] == ("note 1", 0)  # the phone's edit never arrives
    write_db(db, "UPDATE notes SET pinned = 1 WHERE id = 'n2'")  # pending when the device resyncs

    done = client_sdk("resync", "--db", db, "--server", url)
    assert done.stdout.startswith("resynced: pushed 1,")
    assert rows(laptop.path) == {"n0": ("note 0", 0), "n1": ("edited on the phone", 0), "n2": ("note 2", 1)}
    assert server_rows(server_database) == rows(laptop.path)
    assert "pending changes:  0" in client_sdk("status", "--db", db).stdout
    phone.sync()
    assert rows(phone.path) == rows(laptop.path)


def test_conflicts_lists_the_log_with_both_values_and_the_winner(server: Server, device: Device) -> None:
    url = server()
    laptop, phone = device("laptop", url), device("phone", url)
    db = str(laptop.path)
    assert client_sdk("conflicts", "--db", db).stdout == "no conflicts\n"

    write(laptop, "INSERT INTO notes VALUES ('n1', 'milk', 0)")
    laptop.sync()
    phone.sync()
    write(laptop, "UPDATE notes SET body = 'oat milk' WHERE id = 'n1'")
    stamp = laptop.pending_changes()[0].last_modified
    wait_until(lambda: system_ms() > wall_of(stamp), what="the wall clock to pass the laptop's edit")
    write(phone, "UPDATE notes SET body = 'soy milk' WHERE id = 'n1'")
    phone.sync()
    laptop.sync()
    laptop.close()

    listed = client_sdk("conflicts", "--db", db).stdout.splitlines()
    assert listed[0].endswith("notes.Note n1 both_modified, remote won")
    assert listed[1].strip() == "body: local 'oat milk', remote 'soy milk' -> remote kept"
    assert "conflicts logged: 1" in client_sdk("status", "--db", db).stdout


def test_a_missing_or_foreign_database_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    done = client_sdk("status", "--db", str(missing), check=False)
    assert done.returncode != 0
    assert done.stderr == f"error: no database file at {missing}\n"
    assert not missing.exists()

    foreign = tmp_path / "notes.txt"
    foreign.write_text("not a database, just some notes\n" * 100)
    done = client_sdk("status", "--db", str(foreign), check=False)
    assert done.returncode != 0
    assert "error: cannot use" in done.stderr and "not a database" in done.stderr
    assert "Traceback" not in done.stderr

    untracked = tmp_path / "plain.db"
    sqlite3.connect(untracked).close()
    done = client_sdk("conflicts", "--db", str(untracked), check=False)
    assert done.returncode != 0
    assert "tracks no tables" in done.stderr and "Traceback" not in done.stderr
    assert "open it once from the app" in done.stderr and "pass models" not in done.stderr


def test_an_unreachable_server_is_a_clear_error_and_is_recorded(device: Device) -> None:
    laptop = device("laptop")
    write(laptop, "INSERT INTO notes VALUES ('n1', 'milk', 0)")
    laptop.close()
    down = f"http://127.0.0.1:{free_port()}/sync/"
    done = client_sdk("sync", "--db", str(laptop.path), "--server", down, "--retries", "0", check=False)
    assert done.returncode == 1
    assert f"error: sync with {down} failed" in done.stderr
    assert "Connect" in done.stderr and "Traceback" not in done.stderr

    status = client_sdk("status", "--db", str(laptop.path)).stdout
    assert "pending changes:  1" in status
    assert "failed (RetryExhaustedError" in status

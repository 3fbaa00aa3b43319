"""A delete and an edit of the same row, made offline on two devices (issue #23), through real HTTP.

Each world is a server_stub under uvicorn on a fixed loopback port (so it can be
stopped and started again on the same database), and SyncClient devices on
SQLite files of their own, all holding the same synced rows. Device A deletes, device
B (not synced in between) edits; then they sync in one order or the other, and once
more each. The outcome must follow the order in which the writes were made (their
HLC stamps, which the SQLite triggers take from the real clock), not the order in
which the devices reached the server:

* deleted, then edited: the row comes back, everywhere, with B's edit;
* edited, then deleted: the row is gone everywhere, and B logs a ``delete_vs_modify``
  conflict when its edit was beaten before the server had taken it (A synced first).

The writes are 50 ms or 10 s apart, or a server restart lies between them and between
the syncs. Another test runs a fixed script of offline writes on three devices in all
six sync orders and expects one final state. The last three are bugs these tests found,
now fixed: a delete of a key the server never held was lost when it reached the server
first; a device's pending delete was dropped when its sync pulled an older tombstone of
the same key; an edit beaten during a paged push was logged without its field.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client_sdk import HttpTransport, SyncClient, SyncManifest
from client_sdk.protocol.hlc import wall_of
from server_stub import ServerConfig
from tests.conftest import NOTE, NOTES, NOTES_SCHEMA, NewDatabase, create_file, rows, serve
from tests.loopback import free_port
from tests.serverdb import Database, server_rows, server_storage

INITIAL = ("first", 0)
EDITED = "edited by B"


class Recording:
    """An HttpTransport that keeps every answer the server sent (to see the tombstones on the wire)."""

    def __init__(self, url: str) -> None:
        self.inner = HttpTransport(url, retries=0, timeout=10.0)
        self.responses: list[SyncManifest] = []

    def exchange(self, manifest: SyncManifest) -> SyncManifest:
        response = self.inner.exchange(manifest)
        self.responses.append(response)
        return response

    def close(self) -> None:
        self.inner.close()

    def deletes(self) -> dict[str, int]:
        """Every tombstone received: key -> its stamp as sent."""
        seen: dict[str, int] = {}
        for response in self.responses:
            payload = response.payload(NOTE)
            if payload is not None:
                seen.update(payload.deletes)
        return seen


class World:
    """A server_stub on a database of its own at a port of its own, and SyncClient devices on files in ``folder``.

    ``restart()`` stops the server and starts a new one on the same database and port; the
    devices keep their URL, as a phone keeps its server's address.
    """

    def __init__(self, folder: Path, database: Database, names: str = "ab") -> None:
        self.folder = folder
        self.config = ServerConfig(database=database, models=NOTES, schema=NOTES_SCHEMA, node_id="server")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/sync/"
        self._server = ExitStack()
        self._devices = ExitStack()
        self.start()
        self.devices: dict[str, SyncClient] = {name: self.open(name) for name in names}

    def open(self, name: str, transport: Any = None, **options: Any) -> SyncClient:
        path = create_file(self.folder / f"{name}.db")
        transport = transport or HttpTransport(self.url, retries=0, timeout=10.0)
        return self._devices.enter_context(SyncClient(path, models=NOTES, node_id=name, transport=transport, **options))

    def start(self) -> None:
        self._server.enter_context(serve(self.config, self.port))

    def stop(self) -> None:
        self._server.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self._devices.close()
        self._server.close()

    # -- the app's writes, each committed on the device's own connection --
    def insert(self, name: str, key: str, body: str, pinned: int) -> None:
        with self.devices[name].connection as connection:
            connection.execute("INSERT INTO notes (id, body, pinned) VALUES (?, ?, ?)", (key, body, pinned))

    def update(self, name: str, key: str, **values: Any) -> None:
        assignments = ", ".join(f"{column} = ?" for column in values)
        with self.devices[name].connection as connection:
            cursor = connection.execute(f"UPDATE notes SET {assignments} WHERE id = ?", (*values.values(), key))
            assert cursor.rowcount == 1, f"{name} has no row {key!r} to update"

    def delete(self, name: str, key: str) -> None:
        with self.devices[name].connection as connection:
            cursor = connection.execute("DELETE FROM notes WHERE id = ?", (key,))
            assert cursor.rowcount == 1, f"{name} has no row {key!r} to delete"

    def seed(self, keys: list[str], writer: str = "a") -> None:
        """The rows every device starts with: written on one device, then every device syncs."""
        for key in keys:
            self.insert(writer, key, *INITIAL)
        for name in sorted(self.devices, key=lambda n: n != writer):
            self.devices[name].sync()
        assert all(rows(client.path) == dict.fromkeys(keys, INITIAL) for client in self.devices.values())

    def delete_stamp(self, name: str, key: str) -> int:
        """The HLC stamp of a device's pending delete of ``key``."""
        [stamp] = [change.last_modified for change in self.devices[name].pending_changes()
                   if change.key == key and change.kind == "delete"]
        return stamp

    # -- what each side holds --
    def server_rows(self) -> dict[str, tuple[Any, ...]]:
        return server_rows(self.config.database)

    def server_tombstones(self) -> dict[str, int]:
        """key -> the stamp the server decides by and sends for each tombstone it keeps."""
        with server_storage(self.config) as storage:
            return storage.get_deletes_since(NOTE, 0)

    def everyone(self) -> dict[str, dict[str, tuple[Any, ...]]]:
        held = {name: rows(client.path) for name, client in self.devices.items()}
        held["server"] = self.server_rows()
        return held

    def conflicts(self, name: str) -> list[tuple[str, str, dict[str, Any], str]]:
        return [(entry.key, entry.conflict_type, entry.fields, entry.winner) for entry in self.devices[name].conflicts()]


class Worlds:
    """Makes worlds for one test, each on a new folder and server database, and closes them after it."""

    def __init__(self, new_database: NewDatabase) -> None:
        self.new_database = new_database
        self.made: list[World] = []

    def new(self, folder: Path, names: str = "ab") -> World:
        folder.mkdir(parents=True, exist_ok=True)
        self.made.append(World(folder, self.new_database(folder), names))
        return self.made[-1]

    def close(self, world: World) -> None:
        world.close()
        self.made.remove(world)


@pytest.fixture
def worlds(new_server_database: NewDatabase) -> Iterator[Worlds]:
    made = Worlds(new_server_database)
    yield made
    for world in list(made.made):
        made.close(world)


def other(name: str) -> str:
    return "b" if name == "a" else "a"


def beaten_edit(key: str) -> tuple[str, str, dict[str, Any], str]:
    """B's conflict-log entry for an edit of ``body`` that a newer delete beat."""
    return (key, "delete_vs_modify", {"body": {"local": EDITED, "remote": None, "winner": "remote"}}, "remote")


def check_outcome(world: World, first: str, back: list[str], gone: list[str], delete_stamps: dict[str, int]) -> None:
    """Rows in ``back`` hold B's edit everywhere, rows in ``gone`` are nowhere; the server keeps each
    remaining delete's own stamp and sends it on the wire (to a fresh device); B logged exactly the
    edits beaten before the server took them (only when A synced first); A logged nothing."""
    expected = {key: (EDITED, INITIAL[1]) for key in back}
    assert world.everyone() == {"a": expected, "b": expected, "server": expected}
    tombstones = world.server_tombstones()
    assert {key: tombstones.get(key) for key in gone} == {key: delete_stamps[key] for key in gone}
    assert not set(back) & set(tombstones)
    fresh = Recording(world.url)
    world.open("fresh", fresh).sync()
    assert rows(world.folder / "fresh.db") == expected
    assert {key: stamp for key, stamp in fresh.deletes().items() if key in gone} == {key: delete_stamps[key] for key in gone}
    assert world.conflicts("a") == []
    assert sorted(world.conflicts("b")) == (sorted(beaten_edit(key) for key in gone) if first == "a" else [])
    for client in world.devices.values():
        assert client.pending_changes() == []


def sync_pass(world: World, first: str) -> None:
    world.devices[first].sync()
    world.devices[other(first)].sync()


# -- 50 ms apart --

@pytest.mark.parametrize("first", ["a", "b"], ids=["A syncs first", "B syncs first"])
@pytest.mark.parametrize("writes", ["delete, then edit", "edit, then delete"])
def test_writes_50_ms_apart(worlds: Worlds, tmp_path: Path, writes: str, first: str) -> None:
    world = worlds.new(tmp_path / "world")
    world.seed(["k"])
    if writes == "delete, then edit":
        world.delete("a", "k")
        time.sleep(0.05)
        world.update("b", "k", body=EDITED)
    else:
        world.update("b", "k", body=EDITED)
        time.sleep(0.05)
        world.delete("a", "k")
    stamps = {"k": world.delete_stamp("a", "k")}
    sync_pass(world, first)
    sync_pass(world, first)
    if writes == "delete, then edit":
        check_outcome(world, first, back=["k"], gone=[], delete_stamps=stamps)
    else:
        check_outcome(world, first, back=[], gone=["k"], delete_stamps=stamps)


# -- 10 s apart: both orders side by side, one sleep --

def test_writes_10_s_apart_in_both_orders(worlds: Worlds, tmp_path: Path) -> None:
    """k1: A deletes, 10 s later B edits (it comes back); k2: B edits, 10 s later A deletes (it is gone).
    One world where A syncs first, one where B does; both wait through the same 10 s."""
    both = {first: worlds.new(tmp_path / f"{first} first") for first in "ab"}
    for world in both.values():
        world.seed(["k1", "k2"])
        world.delete("a", "k1")
        world.update("b", "k2", body=EDITED)
    time.sleep(10)
    stamps = {}
    for first, world in both.items():
        world.update("b", "k1", body=EDITED)
        world.delete("a", "k2")
        stamps[first] = {"k2": world.delete_stamp("a", "k2")}
        assert wall_of(stamps[first]["k2"]) - wall_of(world.delete_stamp("a", "k1")) >= 10_000, "10 s apart"
    for first, world in both.items():
        sync_pass(world, first)
        sync_pass(world, first)
        check_outcome(world, first, back=["k1"], gone=["k2"], delete_stamps=stamps[first])


# -- across server restarts --

@pytest.mark.parametrize("first", ["a", "b"], ids=["A syncs first", "B syncs first"])
def test_writes_and_syncs_across_server_restarts(worlds: Worlds, tmp_path: Path, first: str) -> None:
    """The server is stopped and started again on the same database and port between the first and the
    second writes, between the first and the second device's sync, and before the second pass:
    what decides (the delete's own stamp, the row it erased) lives in the database."""
    world = worlds.new(tmp_path / "world")
    world.seed(["k1", "k2"])
    world.delete("a", "k1")
    world.update("b", "k2", body=EDITED)
    world.restart()
    world.update("b", "k1", body=EDITED)
    world.delete("a", "k2")
    stamps = {"k2": world.delete_stamp("a", "k2")}
    world.devices[first].sync()
    world.restart()
    world.devices[other(first)].sync()
    world.restart()
    sync_pass(world, first)
    check_outcome(world, first, back=["k1"], gone=["k2"], delete_stamps=stamps)


# -- three devices, every sync order --

def three_device_script(world: World) -> None:
    """Offline writes on a, b and c after all three hold k1-k4 as INITIAL. Each write is a few ms
    after the one before, so no two writes share a stamp.

    k1: a edits body (older), b deletes, c pins it (newer): back, with a's body and c's pin.
    k2: c edits body, then a deletes: gone.
    k3: b edits body, c edits body later: c's body.
    k4: a deletes, then b pins it, then c deletes it: gone.
    k5: inserted offline by b: a new row everywhere.
    """
    steps = [
        lambda: world.update("a", "k1", body="k1 by a"),
        lambda: world.update("c", "k2", body="k2 by c"),
        lambda: world.delete("a", "k4"),
        lambda: world.delete("b", "k1"),
        lambda: world.update("b", "k3", body="k3 by b"),
        lambda: world.update("b", "k4", pinned=1),
        lambda: world.delete("a", "k2"),
        lambda: world.update("c", "k1", pinned=1),
        lambda: world.insert("b", "k5", "new on b", 1),
        lambda: world.update("c", "k3", body="k3 by c"),
        lambda: world.delete("c", "k4"),
    ]
    for step in steps:
        step()
        time.sleep(0.003)


THREE_DEVICE_FINAL = {"k1": ("k1 by a", 1), "k3": ("k3 by c", 0), "k5": ("new on b", 1)}


def test_three_devices_end_alike_in_every_sync_order(worlds: Worlds, tmp_path: Path) -> None:
    finals = {}
    for order in itertools.permutations("abc"):
        world = worlds.new(tmp_path / "".join(order), names="abc")
        world.seed(["k1", "k2", "k3", "k4"])
        three_device_script(world)
        for name in order:
            world.devices[name].sync()
        for _ in range(2):
            for name in "abc":
                world.devices[name].sync()
        held = world.everyone()
        assert all(state == held["server"] for state in held.values()), f"order {order}: {held}"
        finals["".join(order)] = held["server"]
        worlds.close(world)
    assert finals == dict.fromkeys(finals, THREE_DEVICE_FINAL)


# -- bugs these tests found --

def test_a_delete_beats_an_older_insert_of_the_same_key_whichever_syncs_first(worlds: Worlds, tmp_path: Path) -> None:
    """B creates a row with a fixed id offline; 50 ms later A creates the same id, and 50 ms later
    deletes it. The delete is the newest write: the row must end gone in both orders. B first, it
    is; A first, the server drops A's tombstone (it never held the key) and B's insert wins."""
    finals = {}
    for first in "ab":
        world = worlds.new(tmp_path / f"{first} first")
        world.seed([])
        world.insert("b", "settings", "dark", 0)
        time.sleep(0.05)
        world.insert("a", "settings", "light", 1)
        time.sleep(0.05)
        world.delete("a", "settings")
        sync_pass(world, first)
        sync_pass(world, first)
        finals[first] = world.everyone()
    assert finals == dict.fromkeys("ab", {"a": {}, "b": {}, "server": {}})


def test_a_pending_delete_survives_a_pulled_older_tombstone_of_the_same_key(worlds: Worlds, tmp_path: Path) -> None:
    """a deletes j; c deletes k; b edits k; a deletes k (the newest write: k must end gone). c syncs,
    then a, which pushes one change per round (batch_size=1, as any device with more pending
    changes than its batch_size): its first round pushes j's delete and pulls c's older tombstone
    of k, which clears a's pending delete of k. Then b's edit, newer than the only tombstone the
    server holds, brings k back."""
    world = worlds.new(tmp_path / "world", names="bc")
    world.devices["a"] = world.open("a", batch_size=1)
    world.seed(["k", "j"])
    for step in [lambda: world.delete("a", "j"), lambda: world.delete("c", "k"),
                 lambda: world.update("b", "k", body=EDITED), lambda: world.delete("a", "k")]:
        step()
        time.sleep(0.005)
    for name in "cab":
        world.devices[name].sync()
    for _ in range(2):
        for name in "abc":
            world.devices[name].sync()
    assert world.everyone() == {"a": {}, "b": {}, "c": {}, "server": {}}


def test_an_edit_beaten_during_a_paged_push_is_logged_with_its_field(worlds: Worlds, tmp_path: Path) -> None:
    """B edits j, then k; 50 ms later A deletes k; A syncs first. B pushes one change per round
    (batch_size=1): its first round pushes j and pulls k's newer tombstone while k's edit is pending.
    The edit loses, and B's log must say what it lost, as it does when the push is not paged."""
    world = worlds.new(tmp_path / "world", names="a")
    world.devices["b"] = world.open("b", batch_size=1)
    world.seed(["k", "j"])
    world.update("b", "j", pinned=1)
    time.sleep(0.005)
    world.update("b", "k", body=EDITED)
    time.sleep(0.05)
    world.delete("a", "k")
    sync_pass(world, "a")
    sync_pass(world, "a")
    expected = {"j": (INITIAL[0], 1)}
    assert world.everyone() == {"a": expected, "b": expected, "server": expected}
    assert world.conflicts("b") == [beaten_edit("k")]


# -- a property over HTTP --

OPS = st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(["k1", "k2"]),
                         st.sampled_from(["retitle", "pin", "delete", "recreate"])), min_size=1, max_size=6)


def play_offline(world: World, script: list[tuple[str, str, str]]) -> None:
    """Each device writes its share of the script offline, the writes 5 ms apart (so their HLC order is
    the script's); a write that does not apply to the device's rows (an edit of a row it deleted) is
    left out, as the app would not make it."""
    for step, (name, key, op) in enumerate(script):
        present = key in rows(world.devices[name].path)
        if op == "delete" and present:
            world.delete(name, key)
        elif op == "recreate" and not present:
            world.insert(name, key, f"{key} again by {name}", 1)
        elif op in ("retitle", "pin") and present:
            world.update(name, key, **({"body": f"{key} #{step} by {name}"} if op == "retitle" else {"pinned": step % 2}))
        time.sleep(0.005)


@settings(max_examples=6, deadline=None,  # worlds makes a new folder and database for each world: no example
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # sees another's
@given(script=OPS, orders=st.lists(st.permutations("abc").map("".join), min_size=2, max_size=2, unique=True))
def test_the_final_state_is_the_same_in_every_sync_order_over_http(worlds: Worlds, tmp_path_factory: pytest.TempPathFactory,
                                                                   script: list[tuple[str, str, str]],
                                                                   orders: list[str]) -> None:
    """Hypothesis draws the offline writes of three devices and two orders in which they first sync;
    the same writes, played on a fresh server for each order, end in the same state everywhere."""
    finals = []
    for order in orders:
        world = worlds.new(tmp_path_factory.mktemp("order"), names="abc")
        try:
            world.seed(["k1", "k2"])
            play_offline(world, script)
            for _ in range(3):
                for name in order:
                    result = world.devices[name].sync()
                    assert result.ok, result.errors
            state = world.everyone()
            assert all(held == state["server"] for held in state.values()), state
            finals.append(state["server"])
        finally:
            worlds.close(world)
    assert finals[0] == finals[1], (script, orders)

"""A seeded swarm of devices that upgrade their schema at random moments while the fleet keeps syncing (issue #20).

Four devices, each a real SQLite file with a SyncClient, share a real server_stub (over HTTP) whose
``notes`` table has the v2 schema (``tags`` included). Two devices start on v1 (no ``tags`` column),
two on v2. Random steps insert, edit (body, pinned, tags where the device has the column) and delete
notes, through the client's own connection or through a second sqlite3 connection to the same file,
and sync. Each v1 device upgrades (``ALTER TABLE notes ADD COLUMN tags TEXT`` from another connection)
at a random moment: either while its client is closed (it may be written to through a plain
connection while closed, then reopened) or while its client is open (it carries on, writes tags into
the new column before the client noticed, and its next ``sync()`` must pick the column up).

What is checked:

* every sync: no ``errors``, nothing ``held_back``; right after it the device holds exactly what the
  server holds, every field included: a v1 device's ``tags`` are read from what it keeps beside its
  rows (``get_records``), so kept fields are checked to survive each sync, its own edits included;
* every upgrade (on reopen, or at the sync that follows the schema): each field nobody wrote in the
  meantime keeps its value and its stamp (the kept value moved into the column with its stamp), and
  each field written in the meantime holds what was written; a new stamp counts as that write;
* at the end (every device upgraded, two rounds of everyone syncing): every device's rows, a fresh
  v2 device's rows and the server's rows are equal, every device holds the same stamps as the fresh
  one, nothing is pending, and the oracle holds.

The oracle, by the stamps of the writes alone (as ``swarm.py``'s): each write's stamp is read back
(``get_records``, which folds the log) right after it, or at the moment the client stamps it (a write
made while the client was closed is stamped when it reopens; a tags write made before the client
followed the new column is stamped when it does). A key exists iff its newest write is newer than
its newest delete; then each field written since that delete holds the newest value written to it,
with that write's stamp (devices may tie). A field last written before the delete holds a value some
device wrote with exactly that stamp, or, for ``tags`` only, nothing: a write the same device deleted
before syncing never left it, and a v1 device that re-creates a note writes no tags. A field never
written holds NULL with no stamp.

``SWARM_LONG=1`` runs more seeds and more steps. A failure prints its seed and the last steps.
"""

from __future__ import annotations

import os
import random
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from client_sdk import HttpTransport, SyncClient
from tests.conftest import NOTE, NOTES, Server, create_file
from tests.serverdb import Database, server_rows

V1 = "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT, pinned BOOLEAN);"
V2 = "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT, pinned BOOLEAN, tags TEXT);"
ADD_TAGS = "ALTER TABLE notes ADD COLUMN tags TEXT"
FIELDS = ("body", "pinned", "tags")
TAGS = ("", "work", "home", "work,home", "urgent")

LONG = os.environ.get("SWARM_LONG") == "1"
SEEDS = range(100, 112) if LONG else range(4)
STEPS = 2000 if LONG else 500

Values = dict[str, Any]
Stamps = dict[str, int]
Snapshot = dict[str, tuple[Values, Stamps]]
"""key -> (value of each field, stamp of each written field) as the device's storage reads them."""


@dataclass(frozen=True)
class Write:
    key: str
    field: str
    value: Any
    stamp: int
    who: str


class Device:
    """One device's file, its SyncClient (None while closed) and a second writer on the same file."""

    def __init__(self, folder: Path, name: str, url: str, schema: str, keys: list[str]) -> None:
        self.name = name
        self.url = url
        self.keys = keys
        self.path = create_file(folder / f"{name}.db", schema)
        self.has_column = schema == V2
        self.client: SyncClient | None = None
        self.second = sqlite3.connect(self.path, timeout=30)
        self.awaiting_follow = False
        """The column was added while the client was open and no sync has followed it yet."""
        self.pending: dict[tuple[str, str], Any] = {}
        """(key, field) -> value written that the client has not stamped yet (closed, or not following tags)."""
        self.deleted_unseen: set[str] = set()
        """Keys deleted while the client was closed."""
        self.before: Snapshot = {}
        """What the storage held when the client closed."""

    @property
    def open(self) -> bool:
        return self.client is not None

    @property
    def storage(self) -> Any:
        assert self.client is not None, f"{self.name} is closed"
        return self.client.storage

    def tracks_tags(self) -> bool:
        return self.client is not None and "tags" in self.client.storage.fields(NOTE)

    def start(self) -> None:
        self.client = SyncClient(self.path, models=NOTES, node_id=self.name,
                                 transport=HttpTransport(self.url, retries=0, timeout=10.0))

    def stop(self) -> None:
        assert self.client is not None
        self.client.close()
        self.client = None

    def shut(self) -> None:
        self.second.close()
        if self.client is not None:
            self.stop()

    def ids(self) -> list[str]:
        """The keys in the app's table, read through the second connection (works open or closed)."""
        return sorted(row[0] for row in self.second.execute("SELECT id FROM notes"))

    def snapshot(self, keys: list[str] | None = None) -> Snapshot:
        records = self.storage.get_records(NOTE, self.keys if keys is None else keys)
        return {key: ({name: record.data.get(name) for name in FIELDS},
                      {name: stamp for name in FIELDS if (stamp := record.timestamps.get(name, 0))})
                for key, record in records.items()}

    def tombstone(self, key: str) -> int:
        stamps: dict[str, int] = self.storage.get_tombstones(NOTE, [key])
        assert key in stamps, f"{self.name} deleted {key} and kept no tombstone"
        return stamps[key]

    def table(self) -> dict[str, tuple[Any, ...]]:
        """The app's table as a fresh connection reads it."""
        with closing(sqlite3.connect(self.path)) as connection:
            return {row[0]: tuple(row[1:]) for row in connection.execute("SELECT * FROM notes ORDER BY id")}


def alter(path: Path) -> None:
    """The app's v2 migration, from a connection of its own."""
    with closing(sqlite3.connect(path, timeout=30)) as connection:
        connection.execute(ADD_TAGS)
        connection.commit()


@dataclass
class UpgradeSwarm:
    seed: int
    folder: Path
    database: Database
    url: str
    steps: int
    writes: list[Write] = field(default_factory=list)
    deletes: dict[str, int] = field(default_factory=dict)
    """key -> the newest delete's stamp."""
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.keys = [f"note-{self.seed}-{index:02d}" for index in range(10)]
        self.devices = [Device(self.folder, f"d{index}", self.url, V1 if index < 2 else V2, self.keys) for index in range(4)]
        for device in self.devices:
            self._start(device)
        self.upgrade_at = {device.name: self.rng.randint(self.steps // 6, self.steps + self.steps // 3)
                           for device in self.devices if not device.has_column}

    def close(self) -> None:
        for device in self.devices:
            device.shut()

    # ------------------------------------------------------------------ running

    def run(self) -> None:
        for step in range(self.steps):
            for device in self.devices:
                if self.upgrade_at.get(device.name) == step and not device.has_column:
                    self._upgrade(device)
            self.step()
        self.settle()

    def step(self) -> None:
        rng = self.rng
        device = rng.choice(self.devices)
        if not device.open:
            if rng.random() < 0.3:
                self._reopen(device)
            else:
                self._random_write(device, second=True)
            return
        roll = rng.random()
        if roll < 0.6:
            self._random_write(device, second=rng.random() < 0.25)
        elif roll < 0.94:
            self._sync(device)
        else:
            for each in self.devices:
                self._sync(each)

    def settle(self) -> None:
        for device in self.devices:
            if not device.open:
                self._reopen(device)
            if not device.has_column:
                self._upgrade(device, reopen_at_once=True)
        for _ in range(2):
            for device in self.devices:
                self._sync(device)

    # ------------------------------------------------------------------ writes

    def _value(self, name: str, *, tags_set: bool = False) -> Any:
        rng = self.rng
        if name == "body":
            return None if rng.random() < 0.1 else f"b{rng.randint(0, 999)}"
        if name == "pinned":
            return rng.choice([None, 0, 1])
        if tags_set or rng.random() < 0.8:
            return rng.choice(TAGS)
        return None

    def _random_write(self, device: Device, *, second: bool) -> None:
        rng = self.rng
        # the new column, before the client stamps it: written often, to exercise what adopting it does
        tags = device.has_column and not device.tracks_tags() and rng.random() < 0.5
        present = device.ids()
        absent = [key for key in self.keys if key not in present]
        if not device.open:  # one change per key while closed: a delete and a re-insert fold into one write
            touched = {key for key, _name in device.pending} | device.deleted_unseen
            present = [key for key in present if key not in touched]
            absent = [key for key in absent if key not in touched]
        roll = rng.random()
        if (roll < 0.3 or not present) and absent:
            self._insert(device, rng.choice(absent), second)
        elif not present:
            return
        elif roll < 0.88 or tags:
            key = rng.choice(present)
            names = ["body", "pinned"] + (["tags"] if device.has_column else [])
            name = "tags" if tags and device.has_column else rng.choice(names)
            # NULL into a column the client does not track yet cannot be told from "not written" (the
            # kept value fills it): tags written before the client follows the column are never NULL
            self._update(device, key, name, self._value(name, tags_set=name == "tags" and not device.tracks_tags()), second)
        else:
            self._delete(device, rng.choice(present), second)

    def _connection(self, device: Device, second: bool) -> sqlite3.Connection:
        if second or not device.open:
            return device.second
        assert device.client is not None
        return device.client.connection

    def _insert(self, device: Device, key: str, second: bool) -> None:
        values = {"body": self._value("body"), "pinned": self._value("pinned")}
        if device.has_column:
            values["tags"] = self._value("tags")
        names = ", ".join(values)
        self._apply(device, key, values, second, "insert",
                    f"INSERT INTO notes (id, {names}) VALUES (?, {', '.join('?' for _ in values)})", (key, *values.values()))

    def _update(self, device: Device, key: str, name: str, value: Any, second: bool) -> None:
        self._apply(device, key, {name: value}, second, "update", f"UPDATE notes SET {name} = ? WHERE id = ?", (value, key))

    def _apply(self, device: Device, key: str, values: Values, second: bool, kind: str, sql: str,
               params: tuple[Any, ...]) -> None:
        via = "second writer" if second or not device.open else "own connection"
        self.log.append(f"{device.name} {kind} {key} {values} ({via}{', closed' if not device.open else ''})")
        if not device.open:
            with device.second:
                device.second.execute(sql, params)
            for name in FIELDS:
                if name in values or kind == "insert":
                    device.pending[(key, name)] = values.get(name)
            return
        tracked = set(FIELDS) if device.tracks_tags() else {"body", "pinned"}
        before = device.snapshot([key])
        with self._connection(device, second) as connection:
            connection.execute(sql, params)
        after = device.snapshot([key])
        assert key in after, f"{device.name}: {key} was written and is not there"
        old_values, old_stamps = before.get(key, ({}, {}))
        new_values, new_stamps = after[key]
        if kind == "insert":
            expected = tracked
        else:
            expected = {name for name, value in values.items() if name in tracked and old_values.get(name) != value}
        changed = {name for name in FIELDS if new_stamps.get(name, 0) != old_stamps.get(name, 0)}
        assert changed == expected, f"{device.name} {kind} {key} {values}: stamped {changed}, expected {expected}"
        for name in changed:
            assert new_stamps[name] > old_stamps.get(name, 0), f"{device.name} {key}.{name}: a write's stamp went back"
            assert new_values[name] == values.get(name), (
                f"{device.name} {key}.{name}: wrote {values.get(name)!r}, reads {new_values[name]!r}")
            self.writes.append(Write(key, name, new_values[name], new_stamps[name], device.name))
        for name in set(values) - tracked:  # a column added while the client ran: stamped when it follows it
            device.pending[(key, name)] = values[name]
        if kind == "insert" and "tags" not in values:
            assert new_values["tags"] is None and "tags" not in new_stamps, f"{device.name}: new {key} has tags it never got"

    def _delete(self, device: Device, key: str, second: bool) -> None:
        via = "second writer" if second or not device.open else "own connection"
        self.log.append(f"{device.name} delete {key} ({via}{', closed' if not device.open else ''})")
        with self._connection(device, second) as connection:
            connection.execute("DELETE FROM notes WHERE id = ?", (key,))
        if not device.open:
            device.deleted_unseen.add(key)
            return
        for pending in [pending for pending in device.pending if pending[0] == key]:
            del device.pending[pending]
        self._deleted(device, key)

    def _deleted(self, device: Device, key: str) -> None:
        stamp = device.tombstone(key)
        self.deletes[key] = max(stamp, self.deletes.get(key, 0))

    # ------------------------------------------------------------------ upgrades

    def _upgrade(self, device: Device, *, reopen_at_once: bool = False) -> None:
        if device.open and self.rng.random() < 0.5:
            self.log.append(f"{device.name} upgrade while open (ALTER from another connection)")
            alter(device.path)
            device.has_column = True
            device.awaiting_follow = True
            assert not device.tracks_tags()
            self._carry_on(device)  # writes the client stamps only once it follows the column, if they are tags
            return
        self.log.append(f"{device.name} upgrade while closed")
        if device.open:
            device.before = device.snapshot()
            device.stop()
        alter(device.path)
        device.has_column = True
        self._carry_on(device)  # the app writes to the file before it opens the client again
        if reopen_at_once:
            self._reopen(device)

    def _carry_on(self, device: Device) -> None:
        for _ in range(self.rng.randint(0, 4)):
            self._random_write(device, second=self.rng.random() < 0.25)

    def _reopen(self, device: Device) -> None:
        self.log.append(f"{device.name} reopen")
        self._start(device)
        after = device.snapshot()
        self._stamped(device, device.before, after, "reopened")
        for key in sorted(device.deleted_unseen):
            assert key not in after, f"{device.name}: {key} deleted while closed, yet there after reopening"
            self._deleted(device, key)
        device.deleted_unseen.clear()
        device.before = {}
        assert device.tracks_tags() == device.has_column

    def _start(self, device: Device) -> None:
        device.start()
        storage = device.storage
        follow = storage.follow_schema

        def following() -> bool:
            if not device.awaiting_follow:
                return bool(follow())
            before = device.snapshot()
            looked = bool(follow())
            device.awaiting_follow = False
            assert looked and device.tracks_tags(), f"{device.name}: sync did not follow the column added while open"
            self._stamped(device, before, device.snapshot(), "followed the new column")
            return looked

        storage.follow_schema = following

    def _stamped(self, device: Device, before: Snapshot, after: Snapshot, when: str) -> None:
        """The client has just stamped what was written while it could not (closed, or not following tags):
        those fields hold what was written, and any new stamp is that write's; every other field is as it was."""
        pending, device.pending = device.pending, {}
        for key in self.keys:
            if key not in after:
                assert key not in before or key in device.deleted_unseen, f"{device.name} {when}: {key} vanished"
                continue
            old_values, old_stamps = before.get(key, ({}, {}))
            new_values, new_stamps = after[key]
            for name in FIELDS:
                old = (old_values.get(name), old_stamps.get(name, 0))
                new = (new_values[name], new_stamps.get(name, 0))
                if (key, name) in pending:
                    assert new[0] == pending[(key, name)], (
                        f"{device.name} {when}: {key}.{name} holds {new[0]!r}, {pending[(key, name)]!r} was written")
                    if new[1] != old[1]:
                        assert new[1] > old[1], f"{device.name} {when}: {key}.{name} stamp went back {old} -> {new}"
                        self.writes.append(Write(key, name, new[0], new[1], device.name))
                else:
                    assert key in before, f"{device.name} {when}: {key} appeared, nobody inserted it"
                    assert new == old, f"{device.name} {when}: {key}.{name} was {old}, is {new} (nobody wrote it)"

    # ------------------------------------------------------------------ syncing

    def _sync(self, device: Device) -> None:
        if not device.open:
            return
        self.log.append(f"{device.name} sync")
        assert device.client is not None
        result = device.client.sync()
        assert result.errors == [], f"{device.name} sync errors: {result.errors}"
        assert result.held_back == [], f"{device.name} held back: {result.held_back}"
        assert not device.awaiting_follow and device.tracks_tags() == device.has_column
        self._mirrors_server(device)

    def _mirrors_server(self, device: Device) -> None:
        """Right after its sync (nobody else synced since) a device holds exactly the server's rows,
        a v1 device's tags included: kept beside its rows, read back by get_records."""
        server = server_rows(self.database)
        held = {key: tuple(values[name] for name in FIELDS) for key, (values, _stamps) in device.snapshot().items()}
        assert held == server, f"{device.name} after its sync differs from the server:\n  device {held}\n  server {server}"
        table = device.table()
        width = 3 if device.has_column else 2
        assert table == {key: row[:width] for key, row in server.items()}, f"{device.name}'s table differs from the server"
        assert device.storage.pending_count() == 0, f"{device.name}: changes still pending after its sync"

    # ------------------------------------------------------------------ the end

    def check(self) -> None:
        server = server_rows(self.database)
        fresh = Device(self.folder, "fresh", self.url, V2, self.keys)
        try:
            fresh.start()
            assert fresh.client is not None
            result = fresh.client.sync()
            assert result.errors == [] and result.held_back == []
            assert fresh.table() == server, "a fresh v2 device differs from the server"
            final = fresh.snapshot()
        finally:
            fresh.shut()
        for device in self.devices:
            assert device.client is not None
            assert device.table() == server, f"{device.name} did not converge with the server"
            assert device.snapshot() == final, f"{device.name}'s stamps differ from a fresh device's"
            assert device.client.pending_count() == 0 and device.client.held_back() == []
        by_key: dict[str, list[Write]] = {}
        for write in self.writes:
            by_key.setdefault(write.key, []).append(write)
        assert set(server) <= set(by_key), f"rows nobody wrote: {set(server) - set(by_key)}"
        for key, writes in sorted(by_key.items()):
            newest_write = max(write.stamp for write in writes)
            deleted = self.deletes.get(key, 0)
            if newest_write <= deleted:
                assert key not in server, f"{key}: deleted @{deleted} after every write (newest @{newest_write}), yet there"
                continue
            assert key in server, f"{key}: written @{newest_write} after its last delete @{deleted}, yet gone"
            values, stamps = final[key]
            for name in FIELDS:
                held = (values[name], stamps.get(name, 0))
                written = [write for write in writes if write.field == name]
                if not written:
                    assert held == (None, 0), f"{key}.{name}: never written, holds {held}"
                    continue
                newest = max(write.stamp for write in written)
                if newest <= deleted:
                    allowed = {(write.value, write.stamp) for write in written} | ({(None, 0)} if name == "tags" else set())
                    assert held in allowed, f"{key}.{name}: holds {held}, which nobody wrote"
                    continue
                winners = [(write.value, write.stamp, write.who) for write in written if write.stamp == newest]
                assert held in {(value, stamp) for value, stamp, _who in winners}, (
                    f"{key}.{name}: last writer lost: holds {held[0]!r}@{held[1]}, newest {winners}")


@pytest.mark.sqlite_only("the devices' own schema upgrades are the subject; any server does")
@pytest.mark.parametrize("seed", SEEDS)
def test_devices_upgrading_at_random_moments_converge_and_lose_nothing(seed: int, tmp_path: Path, server: Server,
                                                                       server_database: Database) -> None:
    url = server(schema=V2)
    swarm = UpgradeSwarm(seed, tmp_path, server_database, url, STEPS)
    try:
        swarm.run()
        swarm.check()
    except BaseException:
        print(f"\nupgrade swarm seed {seed} failed; last steps:\n  " + "\n  ".join(swarm.log[-40:]))
        print("replay: .venv/bin/python -m pytest "
              f"'tests/reliability/test_upgrade_swarm.py::test_devices_upgrading_at_random_moments_converge_and_lose_nothing[{seed}]'"
              + (" with SWARM_LONG=1" if LONG else ""))
        raise
    finally:
        swarm.close()


def test_a_v1_device_recreating_a_note_it_deleted_gets_the_servers_tags(tmp_path: Path, server: Server,
                                                                        server_database: Database) -> None:
    url = server(schema=V2)
    a = Device(tmp_path, "a", url, V2, ["n1"])
    b = Device(tmp_path, "b", url, V1, ["n1"])
    try:
        a.start()
        b.start()
        assert a.client is not None and b.client is not None
        with a.client.connection as connection:
            connection.execute("INSERT INTO notes (id, body, tags) VALUES ('n1', 'hello', 'work')")
        a.client.sync()
        b.client.sync()
        assert b.snapshot()["n1"][0]["tags"] == "work"  # kept beside the row
        with b.client.connection as connection:
            connection.execute("DELETE FROM notes WHERE id = 'n1'")
        b.client.pending_count()  # folds the log: the delete is pending, and the kept tags go with the row
        with b.client.connection as connection:
            connection.execute("INSERT INTO notes (id, body) VALUES ('n1', 'new')")  # the delete is no longer pending
        assert b.client.sync().errors == []
        assert server_rows(server_database) == {"n1": ("new", None, "work")}  # the server merged its tags in
        b.stop()
        alter(b.path)
        b.start()
        assert b.client is not None
        assert b.client.sync().errors == []
        # the server sent the merged row back, so b kept the tags: after its upgrade it holds them too
        assert b.table() == server_rows(server_database)
    finally:
        a.shut()
        b.shut()

"""Scoped sync (issue #17) at the engine level: two users, four devices, real SQLite files and the real JSON round trip.

Every answer a device receives is checked, right after its exchange (everything here is single-threaded,
so nothing runs in between), against the server's scope at that moment: a row of ``todo_lists`` or
``tasks`` the user cannot see is a leak, a delete of a key the user never saw or pushed is one too, and a
key served twice in one sync (but for the device's own pushes) breaks exactly-once delivery. At the end
every device holds exactly the rows the server's scope gives its user, with the same values.

The swarm runs in two modes: ``guarded``, where a device syncs right before and right after writing into a
list its user does not own (so no pending write is ever overtaken by that list leaving its scope) and every
device syncs before a task is deleted (so no edit is ever beaten by a delete, see EDIT_BEATEN_BY_DELETE), and
``free``, where any device writes anything it can see at any time (issue #17's "leaving a scope" with
pending local edits). Each runs unpaged and with a server page of 5 rows. ``SWARM_LONG=1`` runs more seeds
and steps. The cases that fail today are xfail, naming the bug (the constants below).
"""

from __future__ import annotations

import os
import random
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from client_sdk import DatabaseEngine, SqliteSyncStorage, SyncManifest
from client_sdk.engine.results import DatabaseResult
from client_sdk.protocol.wire import RecordError
from tests.sqlite.test_scopes import LISTS_SCOPE, SCHEMA, SCOPES, AsUser, World, _closing, ids, write

TABLES = {"todo.List": "todo_lists", "todo.Task": "tasks", "todo.Member": "list_members"}
COLUMNS = {"todo_lists": "id, owner, name", "tasks": "id, list_id, title", "list_members": "id, list_id, user_id"}
USERS = ("alice", "bob")
LONG = os.environ.get("SWARM_LONG") == "1"
SEEDS = range(20) if LONG else (1, 2, 3)
STEPS = 1500 if LONG else 300

LEAVING_WITH_PENDING_CHILD = (
    "bug (fixed since for a pending edit, and for a new task refused as landing outside the scope): a device holding "
    "a pending write of a task whose list leaves its user's scope (unshared) gets the list's delete in the same "
    "answer, and every sync raises ConflictStateError ('would leave local rows referring to deleted rows')"
)
PENDING_CHILD_OF_A_GONE_LIST = (
    "bug (fixed since: the task leaves the device with its list, logged; a task moved there comes back as the server "
    "holds it): a device holding a new task of a list that is deleted (or leaves its scope) before the task reached the "
    "server gets the list's delete while the task's push is refused for its missing list: every sync raises "
    "ConflictStateError until the app deletes or re-parents the task (the unscoped rule for a deleted parent)"
)
SCOPED_PAGE_SKIPS_ROWS = (
    "bug (fixed since: a page no longer reads the rows its round wrote; paged answers only): "
    "a row the device pushes is read, in the round that stores it, at the scope stamp it had "
    "before (_sync_scope_members.at), but the cursor takes its new last_modified: a page of a model that ends on it "
    "moves the cursor past the rows in between, and that device never receives them"
)
REVIVED_ROW_STILL_GONE = (
    "bug (fixed since: a row a user writes into their view leaves their gone list; paged answers only): "
    "a row a user's push brings back into their view (an edit newer than another user's "
    "delete of it) stays in _sync_scope_gone for that user; a later page of the same sync carries its delete, and "
    "the device drops a row the server holds, for good"
)
REPLY_BEFORE_ITS_PARENT = (
    "bug (paged answers only, also unscoped): the server's merged version of a row the device pushed comes with the "
    "first page even when it refers to a parent the device gets only on a later page (a list just shared, or new): "
    "the device refuses the page with ConflictStateError, on every sync while the pages fall that way"
)
PARENT_DELETE_PAGED_EARLY = (
    "bug (fixed since; also unscoped, already at HEAD 95acaf4): tombstone windows are per model, so a paged answer can carry a "
    "list's delete while the deletes of the rows referring to it (tasks, list_members: same or older stamps) wait "
    "for a later page, their model's cursor being behind (rows cut by the page budget, or no cursor at all, e.g. "
    "when the round pushed a todo_lists row and no list_members row): the device refuses the page with "
    "ConflictStateError, and does so again on every sync"
)
PUSHED_ROW_UNTRACKED = (
    "bug (fixed since): a row a user's device writes into a list shared with them (a new task) is recorded as visible to "
    "that user "
    "(_sync_scope_members) only at the user's next request; if it leaves their scope before that (unshared, moved "
    "to a private list) no delete is ever sent: the device keeps the row for good, and if its list was unshared "
    "every sync raises ConflictStateError"
)
EDIT_BEATEN_BY_DELETE = (
    "bug (fixed since): for a scoped user, a pushed edit of a row a newer delete erased (another device's, even the same user's) "
    "is refused as 'outside your scope once written' on every sync (the stale edit counts as written, and the erased "
    "row is outside every scope), and the device keeps the deleted row; unscoped, the delete comes back and wins"
)
LEAVING_WITH_PENDING_EDIT = (
    "bug (fixed since): a task moved to a list the user cannot see while one of the user's devices holds a pending edit of it "
    "stays on that device for good (pending, refused on every sync) instead of being removed locally"
)


def visible(connection: sqlite3.Connection, table: str, user: str | None) -> set[tuple[object, ...]]:
    """The rows of ``table`` the server's scope gives ``user`` (every row for None or an unscoped table)."""
    columns = COLUMNS[table]
    if user is None or table not in SCOPES:
        return set(connection.execute(f"SELECT {columns} FROM {table}"))
    return set(connection.execute(f"SELECT {columns} FROM {table} WHERE ({SCOPES[table]})", {"user": user}))


def rows(connection: sqlite3.Connection, table: str) -> set[tuple[object, ...]]:
    return set(connection.execute(f"SELECT {COLUMNS[table]} FROM {table}"))


@dataclass
class Watch:
    """What one device's user was served, checked as it arrives."""

    user: str | None
    seen: set[tuple[str, str]] = field(default_factory=set)
    """(label, key) of every row the user's devices received or pushed: a delete may name only these."""
    leaks: list[str] = field(default_factory=list)
    served: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(label, key) -> how many times it was served in the current sync (not counting echoes of pushes)."""
    pushed: set[tuple[str, str]] = field(default_factory=set)


class Watched(AsUser):
    """``AsUser``, checking each answer against the server's scope as soon as the exchange returns."""

    def __init__(self, server: DatabaseEngine, storage: SqliteSyncStorage, user: str | None, watch: Watch) -> None:
        super().__init__(server, storage, user)  # type: ignore[arg-type]
        self.watch = watch

    def exchange(self, manifest: SyncManifest) -> SyncManifest:
        watch = self.watch
        for payload in manifest.payloads:
            for key in [*payload.records, *payload.deletes]:
                watch.seen.add((payload.model_label, key))
                watch.pushed.add((payload.model_label, key))
        response = super().exchange(manifest)
        server = self.storage.connection
        for payload in response.payloads:
            table = TABLES[payload.model_label]
            allowed = {row[0] for row in visible(server, table, self.user)}
            for key in payload.records:
                if key not in allowed:
                    watch.leaks.append(f"{self.user} was served {table} {key!r}, outside their scope")
                watch.seen.add((payload.model_label, key))
                if (payload.model_label, key) not in watch.pushed:
                    watch.served[(payload.model_label, key)] += 1
            for key in payload.deletes:
                if table in SCOPES and (payload.model_label, key) not in watch.seen:
                    watch.leaks.append(f"{self.user} was sent a delete of {table} {key!r}, which they never saw")
        return response


class ScopedWorld(World):
    """``World`` with a server page size and watched devices."""

    def __init__(self, folder: Path, stack: ExitStack, batch_size: int | None = None) -> None:
        super().__init__(folder, stack)
        self.server = DatabaseEngine(self.server_storage, self.server_storage.dependency_graph(), self.server_storage.clock,
                                     "server", transaction=self.server_storage.transaction, batch_size=batch_size)
        self.watches: dict[str | None, Watch] = {}

    def watched(self, name: str, user: str | None) -> Device:
        path = self.folder / f"{name}.db"
        with sqlite3.connect(path) as setup:
            setup.executescript(SCHEMA)
        storage = self.stack.enter_context(_closing(SqliteSyncStorage(path, SCHEMA_MODELS, node_id=name)))
        watch = self.watches.setdefault(user, Watch(user))
        engine = DatabaseEngine(storage, storage.dependency_graph(), storage.clock, name, transaction=storage.transaction,
                                transport=Watched(self.server, self.server_storage, user, watch))
        return Device(name, user, engine, storage.connection, watch)

    def scope_rows(self, table: str, user: str | None) -> set[tuple[object, ...]]:
        return visible(self.server_storage.connection, table, user)


SCHEMA_MODELS = {"todo_lists": "todo.List", "list_members": "todo.Member", "tasks": "todo.Task"}


@dataclass
class Device:
    name: str
    user: str | None
    engine: DatabaseEngine
    db: sqlite3.Connection
    watch: Watch
    last: DatabaseResult | None = None
    errors: list[RecordError] = field(default_factory=list)

    def sync(self) -> DatabaseResult:
        self.watch.served.clear()
        self.watch.pushed.clear()
        result = self.engine.sync()
        twice = sorted(key for key, count in self.watch.served.items() if count > 1)
        assert not twice, f"{self.name}: served more than once in one sync: {twice[:5]}"
        self.last = result
        self.errors.extend(result.errors)
        return result

    def pending(self) -> set[tuple[str, str]]:
        storage = self.engine.storage
        keys = set()
        for label in TABLES:
            keys |= {(label, key) for key, _record in storage.get_pending(label)}
            keys |= {(label, key) for key in storage.get_pending_deletes(label)}
        return keys


@pytest.fixture
def scoped(tmp_path: Path) -> Iterator[ScopedWorld]:
    with ExitStack() as stack:
        yield ScopedWorld(tmp_path, stack, batch_size=5)


def assert_holds_its_scope(world: ScopedWorld, device: Device) -> None:
    for table in ("todo_lists", "tasks", "list_members"):
        mine, theirs = rows(device.db, table), world.scope_rows(table, device.user)
        assert mine == theirs, (f"{device.name} ({device.user}) {table}: extra {sorted(mine - theirs)[:5]}, "
                                f"missing {sorted(theirs - mine)[:5]}")


# ---------------------------------------------------------------------------------------------------- the swarm


class Swarm:
    def __init__(self, world: ScopedWorld, seed: int, guarded: bool) -> None:
        self.world = world
        self.rng = random.Random(seed)
        self.guarded = guarded
        self.devices = [world.watched(f"{user}-{n}", user) for user in USERS for n in (1, 2)]
        self.serial = 0

    def new_id(self, device: Device, kind: str) -> str:
        self.serial += 1
        return f"{device.name}-{kind}{self.serial}"

    def owned(self, device: Device, list_id: str) -> bool:
        return bool(device.db.execute("SELECT owner FROM todo_lists WHERE id = ?", (list_id,)).fetchone() == (device.user,))

    def step(self) -> None:
        rng = self.rng
        device = rng.choice(self.devices)
        db = device.db
        lists = [key for (key,) in db.execute("SELECT id FROM todo_lists ORDER BY id")]
        mine = [key for (key,) in db.execute("SELECT id FROM todo_lists WHERE owner = ? ORDER BY id", (device.user,))]
        tasks = list(db.execute("SELECT id, list_id FROM tasks ORDER BY id"))
        action = rng.choices(["list", "add", "edit", "delete", "share", "unshare", "move", "sync"],
                             [2, 6, 5, 2, 2, 2, 3, 6])[0]
        if action == "sync" or (action != "list" and not lists):
            device.sync()
        elif action == "list":
            write(db, f"INSERT INTO todo_lists VALUES ('{self.new_id(device, 'L')}', '{device.user}', 'list')")
        elif action == "add":
            self.touch(device, rng.choice(lists), lambda list_id: write(
                db, f"INSERT INTO tasks VALUES ('{self.new_id(device, 'T')}', '{list_id}', 'new')"))
        elif action in ("edit", "delete") and tasks:
            key, list_id = rng.choice(tasks)
            sql = (f"UPDATE tasks SET title = 'edit {self.serial}' WHERE id = '{key}'" if action == "edit"
                   else f"DELETE FROM tasks WHERE id = '{key}'")
            self.serial += 1
            if action == "delete" and self.guarded:  # no device holds an edit of it then: EDIT_BEATEN_BY_DELETE
                for each in self.devices:
                    each.sync()
                if not db.execute("SELECT 1 FROM tasks WHERE id = ? AND list_id = ?", (key, list_id)).fetchone():
                    return
            self.touch(device, list_id, lambda _list_id: write(db, sql), key)
        elif action == "share" and mine:
            list_id = rng.choice(mine)
            other = next(user for user in USERS if user != device.user)
            if not db.execute("SELECT 1 FROM list_members WHERE list_id = ? AND user_id = ?", (list_id, other)).fetchone():
                write(db, f"INSERT INTO list_members VALUES ('{self.new_id(device, 'M')}', '{list_id}', '{other}')")
        elif action == "unshare" and mine:
            shares = list(db.execute(f"SELECT id FROM list_members WHERE list_id IN ({','.join('?' * len(mine))}) ORDER BY id",
                                     mine))
            if shares:
                write(db, f"DELETE FROM list_members WHERE id = '{rng.choice(shares)[0]}'")
        elif action == "move" and tasks and len(lists) > 1:
            key, list_id = rng.choice(tasks)
            target = rng.choice([other for other in lists if other != list_id])
            if self.guarded and not (self.owned(device, list_id) and self.owned(device, target)):
                return  # guarded: only the owner of both lists moves (a move can take a task from under a pending edit)
            write(db, f"UPDATE tasks SET list_id = '{target}' WHERE id = '{key}'")

    def touch(self, device: Device, list_id: str, change: Callable[[str], None], key: str | None = None) -> None:
        """Write into ``list_id``; guarded, a list the user does not own is written only between two syncs."""
        if not self.guarded or self.owned(device, list_id):
            change(list_id)
            return
        device.sync()
        still = device.db.execute("SELECT 1 FROM todo_lists WHERE id = ?", (list_id,)).fetchone()
        if key is not None:
            still = still and device.db.execute("SELECT 1 FROM tasks WHERE id = ? AND list_id = ?", (key, list_id)).fetchone()
        if still:
            change(list_id)
            device.sync()

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()
        for _ in range(2):
            for device in self.devices:
                device.sync()


def check_swarm(swarm: Swarm) -> None:
    world = swarm.world
    leaks = [leak for watch in world.watches.values() for leak in watch.leaks]
    assert not leaks, leaks[:5]
    for device in swarm.devices:
        others = [error for error in device.errors if not any(
            reason in str(error.get("message")) for reason in ("outside your scope", "removed from this device"))]
        assert not others, f"{device.name}: errors other than scope refusals and their consequences: {others[:5]}"
    for device in swarm.devices:
        assert device.last is not None
        reported = {(str(error["model_label"]), str(error["key"])) for error in device.last.errors}
        unreported = device.pending() - reported
        assert not unreported, f"{device.name}: pending changes neither synced nor reported: {sorted(unreported)[:5]}"
    for device in swarm.devices:
        assert_holds_its_scope(world, device)
    # the swarm did exercise the scopes: something was shared, and some row reached the other user
    server = world.server_storage.connection
    assert server.execute("SELECT count(*) FROM list_members").fetchone()[0] > 0 or \
        server.execute("SELECT count(*) FROM _sync_scope_gone").fetchone()[0] > 0


PAGES = [None, 5]


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("seed", SEEDS)
def test_swarm_each_device_ends_with_exactly_its_users_rows_and_nothing_leaks(tmp_path: Path, seed: int, page: int | None
                                                                              ) -> None:
    with ExitStack() as stack:
        swarm = Swarm(ScopedWorld(tmp_path, stack, batch_size=page), seed, guarded=True)
        guarded_swarm(swarm)


def guarded_swarm(swarm: Swarm) -> None:
    swarm.run(STEPS)
    check_swarm(swarm)
    # Guarded, refusals are rare but not impossible, so check_swarm's "scope refusals only, and reported" is the rule.


PAGED_FREE_SWARM_BUGS = (REPLY_BEFORE_ITS_PARENT,)


@pytest.mark.parametrize("page", [None, pytest.param(5, marks=pytest.mark.xfail(
    strict=False, reason="; ".join(PAGED_FREE_SWARM_BUGS)))])
@pytest.mark.parametrize("seed", SEEDS)
def test_swarm_with_writes_overtaken_by_scope_changes(tmp_path: Path, seed: int, page: int | None) -> None:
    with ExitStack() as stack:
        swarm = Swarm(ScopedWorld(tmp_path, stack, batch_size=page), seed, guarded=False)
        swarm.run(STEPS)
        check_swarm(swarm)


# ---------------------------------------------------------------------------------------------------- focused


def shared_list(world: ScopedWorld, tasks: int = 2) -> tuple[Device, Device]:
    """alice's list A with tasks a0.., shared with bob; both devices synced."""
    alice, bob = world.watched("alice-laptop", "alice"), world.watched("bob-laptop", "bob")
    write(alice.db, "INSERT INTO todo_lists VALUES ('A', 'alice', 'groceries'), ('P', 'alice', 'private')")
    for n in range(tasks):
        write(alice.db, f"INSERT INTO tasks VALUES ('a{n:02}', 'A', 'task {n}')")
    write(alice.db, "INSERT INTO list_members VALUES ('m1', 'A', 'bob')")
    assert alice.sync().ok and bob.sync().ok
    return alice, bob


def test_paging_delivers_each_row_exactly_once_per_user(tmp_path: Path) -> None:
    with ExitStack() as stack:
        world = ScopedWorld(tmp_path, stack, batch_size=7)
        alice, bob = world.watched("alice-laptop", "alice"), world.watched("bob-laptop", "bob")
        write(bob.db, "INSERT INTO todo_lists VALUES ('B', 'bob', 'tools')")
        write(alice.db, "INSERT INTO todo_lists VALUES ('A', 'alice', 'big')")
        for n in range(50):
            write(alice.db, f"INSERT INTO tasks VALUES ('a{n:02}', 'A', 'task {n}')")
        assert alice.sync().ok and bob.sync().ok
        assert ids(bob.db, "tasks") == [] and not bob.watch.leaks
        # bob's checkpoint is now newer than every one of alice's rows
        write(alice.db, "INSERT INTO list_members VALUES ('m1', 'A', 'bob')")
        assert alice.sync().ok
        counts: Counter[str] = Counter()
        inner = bob.engine.transport
        assert isinstance(inner, Watched)
        exchange = inner.exchange

        def counting(manifest: SyncManifest) -> SyncManifest:
            response = exchange(manifest)
            for payload in response.payloads:
                counts.update(f"{payload.model_label} {key}" for key in payload.records)
            return response

        inner.exchange = counting  # type: ignore[method-assign]
        result = bob.sync()
        assert result.ok and result.rounds > 50 // 7
        tasks = {f"todo.Task a{n:02}" for n in range(50)}
        assert {key: count for key, count in counts.items() if key in tasks} == dict.fromkeys(tasks, 1)
        assert ids(bob.db, "tasks") == [f"a{n:02}" for n in range(50)] and ids(bob.db, "todo_lists") == ["A", "B"]
        assert not bob.watch.leaks
        assert_holds_its_scope(world, bob)


def test_a_task_moved_to_a_private_list_leaves_the_other_users_devices_only(scoped: ScopedWorld) -> None:
    alice, bob = shared_list(scoped)
    alice2, bob2 = scoped.watched("alice-phone", "alice"), scoped.watched("bob-phone", "bob")
    assert alice2.sync().ok and bob2.sync().ok
    assert ids(bob2.db, "tasks") == ["a00", "a01"]
    write(alice.db, "UPDATE tasks SET list_id = 'P' WHERE id = 'a00'")
    assert alice.sync().ok
    for device in (bob, bob2):
        result = device.sync()
        assert result.ok and ids(device.db, "tasks") == ["a01"] and device.engine.storage.pending_count() == 0
    for device in (alice, alice2):
        result = device.sync()
        assert result.ok and not any(result.deleted.values()), result.deleted
        assert device.db.execute("SELECT list_id FROM tasks WHERE id = 'a00'").fetchone() == ("P",)
    assert scoped.server_storage.connection.execute("SELECT list_id FROM tasks WHERE id = 'a00'").fetchone() == ("P",)
    for device in (alice, alice2, bob, bob2):
        assert_holds_its_scope(scoped, device)
        assert not device.watch.leaks


def test_an_edit_overtaken_by_an_unshare_is_refused_and_reported(scoped: ScopedWorld) -> None:
    alice, bob = shared_list(scoped)
    write(bob.db, "UPDATE tasks SET title = 'bob was here' WHERE id = 'a00'")
    write(alice.db, "DELETE FROM list_members WHERE id = 'm1'")
    assert alice.sync().ok
    result = bob.sync()
    assert [(error["key"], "outside your scope" in str(error["message"])) for error in result.errors] == [("a00", True)]
    assert scoped.server_storage.connection.execute("SELECT title FROM tasks WHERE id = 'a00'").fetchone() == ("task 0",)
    assert ids(bob.db, "tasks") == [] and ids(bob.db, "todo_lists") == []


def test_an_edit_overtaken_by_a_move_out_of_scope_is_refused_and_the_row_leaves(scoped: ScopedWorld) -> None:
    alice, bob = shared_list(scoped)
    write(bob.db, "UPDATE tasks SET title = 'bob was here' WHERE id = 'a00'")
    write(alice.db, "UPDATE tasks SET list_id = 'P' WHERE id = 'a00'")
    assert alice.sync().ok
    result = bob.sync()
    assert [error["key"] for error in result.errors] == ["a00"]  # refused and reported: this much holds today
    assert scoped.server_storage.connection.execute("SELECT list_id, title FROM tasks WHERE id = 'a00'").fetchone() == \
        ("P", "task 0")
    assert ids(bob.db, "tasks") == ["a01"]


def test_an_edit_overtaken_by_a_move_is_reported_not_dropped(scoped: ScopedWorld) -> None:
    """The edit is refused with a per-key error (never silently dropped), the server's row is unchanged, and
    the row leaves bob's device with the refusal: the next sync has nothing left to refuse."""
    alice, bob = shared_list(scoped)
    write(bob.db, "UPDATE tasks SET title = 'bob was here' WHERE id = 'a00'")
    write(alice.db, "UPDATE tasks SET list_id = 'P' WHERE id = 'a00'")
    assert alice.sync().ok
    result = bob.sync()
    assert [(error["key"], "outside your scope" in str(error["message"])) for error in result.errors] == [("a00", True)]
    assert "a00" not in ids(bob.db, "tasks") and bob.sync().ok
    assert scoped.server_storage.connection.execute("SELECT list_id, title FROM tasks WHERE id = 'a00'").fetchone() == \
        ("P", "task 0")
    assert not bob.watch.leaks


def test_a_share_delivers_an_old_list_and_its_tasks_past_the_checkpoint(scoped: ScopedWorld) -> None:
    alice = scoped.watched("alice-laptop", "alice")
    bob, bob2 = scoped.watched("bob-laptop", "bob"), scoped.watched("bob-phone", "bob")
    write(alice.db, "INSERT INTO todo_lists VALUES ('OLD', 'alice', 'last year')")
    write(alice.db, "INSERT INTO tasks VALUES ('o1', 'OLD', 'a'), ('o2', 'OLD', 'b'), ('o3', 'OLD', 'c')")
    assert alice.sync().ok
    # bob works for a while: his checkpoint moves well past alice's rows
    for n in range(5):
        write(bob.db, f"INSERT INTO todo_lists VALUES ('B{n}', 'bob', 'mine')")
        assert bob.sync().ok and bob2.sync().ok
    assert ids(bob.db, "todo_lists") == [f"B{n}" for n in range(5)]
    write(alice.db, "INSERT INTO list_members VALUES ('m1', 'OLD', 'bob')")
    assert alice.sync().ok
    for device in (bob, bob2):
        assert device.sync().ok
        assert "OLD" in ids(device.db, "todo_lists") and ids(device.db, "tasks") == ["o1", "o2", "o3"]
        assert_holds_its_scope(scoped, device)
        assert not device.watch.leaks


def test_a_hostile_push_into_the_other_users_rows_changes_nothing(scoped: ScopedWorld) -> None:
    alice, bob = shared_list(scoped)
    write(alice.db, "INSERT INTO tasks VALUES ('p1', 'P', 'secret')")
    assert alice.sync().ok
    before = {table: rows(scoped.server_storage.connection, table) for table in ("todo_lists", "tasks")}
    hostile = sqlite3.connect(scoped.folder / "bob-laptop.db")  # a client that forges what it never saw
    write(hostile, "INSERT INTO todo_lists VALUES ('P', 'alice', 'mine now')")
    write(hostile, "INSERT INTO tasks VALUES ('p1', 'P', 'overwritten'), ('p2', 'P', 'planted')")
    hostile.close()
    result = bob.sync()
    assert {error["key"] for error in result.errors} == {"P", "p1", "p2"}
    assert all("outside your scope" in str(error["message"]) for error in result.errors)
    assert {table: rows(scoped.server_storage.connection, table) for table in before} == before
    assert not bob.watch.leaks
    assert alice.sync().ok and ids(alice.db, "tasks") == ["a00", "a01", "p1"]


def test_an_unscoped_user_sees_every_row(scoped: ScopedWorld) -> None:
    alice, bob = shared_list(scoped)
    write(bob.db, "INSERT INTO todo_lists VALUES ('B', 'bob', 'tools')")
    write(bob.db, "INSERT INTO tasks VALUES ('b1', 'B', 'hammer')")
    write(alice.db, "INSERT INTO tasks VALUES ('p1', 'P', 'secret')")
    assert bob.sync().ok and alice.sync().ok
    admin = scoped.watched("admin", None)
    assert admin.sync().ok
    assert ids(admin.db, "todo_lists") == ["A", "B", "P"] and ids(admin.db, "tasks") == ["a00", "a01", "b1", "p1"]
    assert_holds_its_scope(scoped, admin)
    assert rows(admin.db, "tasks") == rows(scoped.server_storage.connection, "tasks")


def test_the_scope_of_tasks_follows_their_list(scoped: ScopedWorld) -> None:
    """A scope on a child table through its parent: sharing the list brings its tasks, unsharing takes them."""
    alice, bob = shared_list(scoped, tasks=3)
    assert ids(bob.db, "tasks") == ["a00", "a01", "a02"]
    write(alice.db, "DELETE FROM list_members WHERE id = 'm1'")
    assert alice.sync().ok
    result = bob.sync()
    assert result.ok and ids(bob.db, "tasks") == [] and ids(bob.db, "todo_lists") == []
    assert bob.engine.storage.pending_count() == 0
    # bob's devices dropped the rows without a delete reaching anyone: alice keeps hers
    assert alice.sync().ok and ids(alice.db, "tasks") == ["a00", "a01", "a02"]
    write(alice.db, "INSERT INTO list_members VALUES ('m2', 'A', 'bob')")
    assert alice.sync().ok and bob.sync().ok
    assert ids(bob.db, "tasks") == ["a00", "a01", "a02"]
    assert LISTS_SCOPE in SCOPES["tasks"]
    for device in (alice, bob):
        assert_holds_its_scope(scoped, device)
        assert not device.watch.leaks


@pytest.mark.parametrize("user", ["bob", None])
def test_a_paged_answer_never_deletes_a_parent_before_its_children(tmp_path: Path, user: str | None) -> None:
    with ExitStack() as stack:
        world = ScopedWorld(tmp_path, stack, batch_size=5)
        alice, bob = world.watched("alice-laptop", "alice"), world.watched("bob-laptop", user)
        write(alice.db, "INSERT INTO todo_lists VALUES ('A', 'alice', 'g'), ('S', 'alice', 's')")
        write(alice.db, "INSERT INTO list_members VALUES ('m1', 'A', 'bob'), ('m2', 'S', 'bob')")
        assert alice.sync().ok and bob.sync().ok
        write(alice.db, "DELETE FROM list_members WHERE id = 'm1'")  # bob's scope loses A; unscoped, A goes too:
        if user is None:
            write(alice.db, "DELETE FROM todo_lists WHERE id = 'A'")
        for n in range(6):  # more than a page for bob to pull
            write(alice.db, f"INSERT INTO tasks VALUES ('s{n}', 'S', 'x')")
        assert alice.sync().ok
        write(bob.db, "INSERT INTO todo_lists VALUES ('B', 'bob', 'mine')")  # bob pushes a list in the same round
        assert bob.sync().ok
        assert ids(bob.db, "todo_lists") == ["B", "S"] and ids(bob.db, "list_members") == ["m2"]
        assert ids(bob.db, "tasks") == [f"s{n}" for n in range(6)]


@pytest.mark.parametrize("leaves_by", ["unshare", "move"])
def test_a_row_the_user_wrote_leaves_their_devices_with_its_list(scoped: ScopedWorld, leaves_by: str) -> None:
    """PUSHED_ROW_UNTRACKED, fixed by 006e487 (a row a user writes is recorded as theirs at once)."""
    alice, bob = shared_list(scoped, tasks=0)
    write(bob.db, "INSERT INTO tasks VALUES ('b1', 'A', 'written by bob')")
    assert bob.sync().ok and alice.sync().ok
    write(alice.db, "DELETE FROM list_members WHERE id = 'm1'" if leaves_by == "unshare"
          else "UPDATE tasks SET list_id = 'P' WHERE id = 'b1'")
    assert alice.sync().ok
    assert bob.sync().ok
    assert ids(bob.db, "tasks") == []
    assert_holds_its_scope(scoped, bob)


def test_an_edit_beaten_by_a_newer_delete_is_not_refused_as_out_of_scope(scoped: ScopedWorld) -> None:
    laptop, phone = scoped.watched("alice-laptop", "alice"), scoped.watched("alice-phone", "alice")
    write(laptop.db, "INSERT INTO todo_lists VALUES ('A', 'alice', 'groceries')")
    write(laptop.db, "INSERT INTO tasks VALUES ('t1', 'A', 'milk')")
    assert laptop.sync().ok and phone.sync().ok
    write(laptop.db, "UPDATE tasks SET title = 'oat milk' WHERE id = 't1'")
    write(phone.db, "DELETE FROM tasks WHERE id = 't1'")
    assert phone.sync().ok
    result = laptop.sync()
    assert result.ok, result.errors  # as unscoped: the newer delete wins, and comes back to the laptop
    assert ids(laptop.db, "tasks") == [] and laptop.engine.storage.pending_count() == 0

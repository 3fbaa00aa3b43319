"""Deletes against edits on the engine (issue #23): in-memory nodes, one settable wall clock.

* A Hypothesis swarm: 2-4 devices start from one synced state, write offline (insert,
  update of one field, delete) at increasing wall times, then sync in a drawn order
  and twice more each. Every device ends equal to the server, and the server's final
  rows are the same for every order of the first pass (the world is rebuilt from the
  same writes for each order), and are what the writes' HLC order says
  (``by_hlc_order``): a row exists if its newest write is not a delete, and each field
  holds its newest value among the rows the devices push. Devices and the server page
  (batch_size 1 or 2) in some examples.
* Two bugs this found, now fixed: a delete of a key the server never held was lost
  when it reached the server first; a pending delete was dropped when the device pulled
  an older tombstone of the same key before pushing it.
* The resolvers of PROTOCOL.md 9 on the server side, for a delete followed by an edit
  and an edit followed by a delete, in both sync orders.
* The conflict log: a device whose pending edit a delete beats logs a
  ``delete_vs_modify`` conflict, against our server and against one that stamps deletes
  with its own clock (``LegacyServerEngine``, as the existing server does), naming the
  field also when the device pulled the tombstone before pushing the edit.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk import (
    ConflictResolver,
    ConflictType,
    DatabaseEngine,
    DatabaseResult,
    FieldConflict,
    FieldOwnershipWins,
    FieldTimestampWins,
    LocalWins,
    PayloadReconciler,
    RemoteWins,
    ResolutionSource,
    SyncManifest,
)
from tests.engine.harness import LIST, LegacyServerEngine, Recorder, Wall, make_client, make_server

FIELDS = ("title", "done")
KEYS = ("k0", "k1", "k2")
TITLES = ("tea", "milk", "eggs")

# -- the swarm --


@dataclass(frozen=True)
class Write:
    """One offline write on a device. ``op``: ``put`` (insert, or update both fields: ``value`` is
    (title, done)), ``set`` (update ``field`` to ``value``, only if the device has the row, as an
    SQL UPDATE), ``delete`` (only if it has the row). ``gap``: wall ms since the write before."""

    device: int
    key: str
    op: str
    field: str = ""
    value: Any = None
    gap: int = 1


def values() -> st.SearchStrategy[tuple[str, bool]]:
    return st.tuples(st.sampled_from(TITLES), st.booleans())


@st.composite
def writes(draw: st.DrawFn, devices: int, keys: tuple[str, ...]) -> Write:
    device = draw(st.integers(0, devices - 1))
    key = draw(st.sampled_from(keys))
    gap = draw(st.integers(1, 3000))
    op = draw(st.sampled_from(["put", "set", "set", "delete", "delete"]))
    if op == "put":
        return Write(device, key, op, value=draw(values()), gap=gap)
    if op == "set":
        field = draw(st.sampled_from(FIELDS))
        value = draw(st.sampled_from(TITLES) if field == "title" else st.booleans())
        return Write(device, key, op, field, value, gap)
    return Write(device, key, op, gap=gap)


@dataclass(frozen=True)
class Scenario:
    devices: int
    initial: dict[str, tuple[str, bool] | None]
    writes: list[Write]
    order: tuple[int, ...]
    page: int | None = None
    """batch_size of the server and of every device (None: no paging)."""


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    devices = draw(st.integers(2, 4))
    keys = KEYS[:draw(st.integers(2, 3))]
    initial = {key: draw(st.none() | values()) for key in keys}
    timeline = draw(st.lists(writes(devices, keys), min_size=1, max_size=12))
    order = tuple(draw(st.permutations(range(devices))))
    return Scenario(devices, initial, timeline, order, draw(st.sampled_from([None, None, 1, 2])))


class World:
    """A server engine and ``count`` client engines on MemoryStorage, all reading one Wall."""

    def __init__(self, count: int, resolver: ConflictResolver | None = None,
                 server_class: type[DatabaseEngine] = DatabaseEngine, server_page: int | None = None,
                 **client_options: Any) -> None:
        self.wall = Wall()
        options = {} if resolver is None else {"reconciler": PayloadReconciler(resolver)}
        self.server = make_server(self.wall, engine_class=server_class, batch_size=server_page, **options)
        self.devices = [make_client(self.server, f"d{index}", self.wall, **client_options) for index in range(count)]

    def sync(self, index: int) -> DatabaseResult:
        self.wall.advance(1)
        return self.devices[index].sync()

    def rows(self, index: int) -> dict[str, dict]:
        return self.devices[index].storage.rows(LIST)  # type: ignore[attr-defined]

    def server_rows(self) -> dict[str, dict]:
        return self.server.storage.rows(LIST)  # type: ignore[attr-defined]

    def seed(self, initial: dict[str, tuple[str, bool] | None]) -> None:
        """Device 0 writes the initial rows, everyone syncs; then the wall moves on a second, so every
        later write's HLC stamp is its wall time (no node has seen a stamp as new)."""
        for key, start in initial.items():
            if start is not None:
                self.devices[0].storage.write(LIST, key, dict(zip(FIELDS, start, strict=True)))  # type: ignore[attr-defined]
        for index in range(len(self.devices)):
            self.sync(index)
        expected = {key: {"id": key, **dict(zip(FIELDS, start, strict=True))} for key, start in initial.items() if start}
        assert all(self.rows(index) == expected for index in range(len(self.devices)))
        self.wall.advance(1000)

    def write(self, write: Write) -> None:
        self.wall.advance(write.gap)
        storage = self.devices[write.device].storage
        present = write.key in storage.rows(LIST)  # type: ignore[attr-defined]
        if write.op == "put":
            storage.write(LIST, write.key, dict(zip(FIELDS, write.value, strict=True)))  # type: ignore[attr-defined]
        elif write.op == "set" and present:
            storage.write(LIST, write.key, {write.field: write.value})  # type: ignore[attr-defined]
        elif write.op == "delete" and present:
            storage.delete(LIST, write.key)  # type: ignore[attr-defined]


def play(scenario: Scenario, order: tuple[int, ...]) -> World:
    """The scenario's writes, then syncs in ``order``, then two full passes."""
    world = World(scenario.devices, server_page=scenario.page, batch_size=scenario.page)
    world.seed(scenario.initial)
    for write in scenario.writes:
        world.write(write)
    for index in order:
        world.sync(index)
    for _ in range(2):
        for index in range(scenario.devices):
            world.sync(index)
    return world


def by_hlc_order(scenario: Scenario) -> dict[str, dict]:
    """What the writes say, taken in the order they were made (their stamps increase with it).

    A write is what the device's storage stamps: the fields whose value it changes there (all of
    them when it inserts); writing a value the row already holds writes nothing. A row exists if its
    newest write is not a delete. Its fields then hold their newest values among the rows the devices
    push: an edit the same device deleted afterwards never leaves that device (a tombstone carries
    no values), but an edit older than another device's delete does, and a later edit brings the
    row back with it.
    """
    start = {key: {name: (-1, value) for name, value in zip(FIELDS, values, strict=True)} if values else None
             for key, values in scenario.initial.items()}
    views = [{key: dict(row) if row else None for key, row in start.items()} for _ in range(scenario.devices)]
    alive = {key: row is not None for key, row in start.items()}
    for when, write in enumerate(scenario.writes):
        view = views[write.device]
        row = view[write.key]
        if write.op == "delete":
            if row is not None:
                view[write.key] = None
                alive[write.key] = False
            continue
        if write.op == "set" and row is None:
            continue
        values = dict(zip(FIELDS, write.value, strict=True)) if write.op == "put" else {write.field: write.value}
        changed = values if row is None else {name: value for name, value in values.items() if row[name][1] != value}
        if changed:
            view[write.key] = {**(row or {}), **{name: (when, value) for name, value in changed.items()}}
            alive[write.key] = True
    final = {}
    for key in scenario.initial:
        pushed = [row for row in [start[key], *(view[key] for view in views)] if row is not None]
        if alive[key]:
            final[key] = {"id": key, **{name: max(row[name] for row in pushed)[1] for name in FIELDS}}
    return final


def orders(devices: int, drawn: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The drawn first-pass order and the other ones compared with it: all of them up to three
    devices; for four, the drawn one, its reverse and every rotation of both (8 of 24)."""
    if devices <= 3:
        return list(itertools.permutations(range(devices)))
    rotations = [drawn[i:] + drawn[:i] for i in range(devices)]
    reverse = drawn[::-1]
    return list(dict.fromkeys([*rotations, *(reverse[i:] + reverse[:i] for i in range(devices))]))


@settings(max_examples=200)
@given(scenario=scenarios())
def test_the_final_state_follows_hlc_order_whatever_the_sync_order(scenario: Scenario) -> None:
    expected = by_hlc_order(scenario)
    finals = {}
    for order in orders(scenario.devices, scenario.order):
        world = play(scenario, order)
        final = world.server_rows()
        for index in range(scenario.devices):
            assert world.rows(index) == final, f"first pass {order}: device d{index} differs from the server"
        finals[order] = final
    assert finals == dict.fromkeys(finals, expected)


def test_the_hlc_oracle_keeps_a_field_written_before_the_delete_when_a_later_edit_revives_the_row() -> None:
    """The swarm's oracle on the case of the README: an older edit of one field, a delete, a newer
    edit of another field: the row comes back with both edits, in every sync order."""
    scenario = Scenario(3, {"k0": ("tea", False)}, [
        Write(0, "k0", "set", "title", "milk"),
        Write(1, "k0", "delete"),
        Write(2, "k0", "set", "done", True),
    ], (0, 1, 2))
    assert by_hlc_order(scenario) == {"k0": {"id": "k0", "title": "milk", "done": True}}
    for order in itertools.permutations(range(3)):
        world = play(scenario, order)
        assert world.server_rows() == by_hlc_order(scenario), order


def test_a_delete_beats_an_older_insert_of_the_same_key_that_reaches_the_server_after_it() -> None:
    """Two devices create the same key (a fixed id, like a settings row) offline: B at t1, A at t2; A
    deletes it at t3. The delete is the newest write: the row must end gone in both sync orders.
    B first: gone. A first: the server had never held the key, keeps no tombstone for A's delete,
    and B's older insert then creates the row everywhere."""
    scenario = Scenario(2, {"k0": None}, [
        Write(1, "k0", "put", value=("dark", False)),
        Write(0, "k0", "put", value=("light", True)),
        Write(0, "k0", "delete"),
    ], (0, 1))
    assert by_hlc_order(scenario) == {}
    finals = {order: play(scenario, order).server_rows() for order in [(1, 0), (0, 1)]}
    assert finals == {(1, 0): {}, (0, 1): {}}


class DeleteDuringExchange(Recorder):
    """Deletes a row on the device once its first request is on the wire (the server has answered it)."""

    def __init__(self, inner: object, world: World, index: int, key: str) -> None:
        super().__init__(inner)
        self.action: tuple[World, int, str] | None = (world, index, key)

    def send(self, manifest: SyncManifest) -> bytes:
        body = super().send(manifest)
        if self.action is not None:
            world, index, key = self.action
            self.action = None
            world.wall.advance(5)
            world.devices[index].storage.delete(LIST, key)  # type: ignore[attr-defined]
        return body


@pytest.mark.parametrize("how", ["push paged", "delete made during the round"])
def test_a_pending_delete_survives_a_pulled_older_tombstone_of_the_same_key(how: str) -> None:
    """d2 deletes k; d1 edits k; d0 deletes k: d0's delete is the newest write, so k must end gone.
    d2 syncs first; then d0 pulls d2's older tombstone of k while its own delete is pending:
    "push paged": d0 pushes one change per round (batch_size=1, as any device with more pending
    changes than its batch_size) and its first round carries an older delete of j;
    "delete made during the round": d0 deletes k while a round is on the wire.
    The pulled tombstone clears d0's pending delete, and d1's edit, newer than the only tombstone
    the server holds, brings k back."""
    paged = how == "push paged"
    world = World(3, batch_size=1 if paged else None)
    world.seed({"k": ("tea", False), "j": ("milk", False)})
    if paged:
        world.wall.advance(10)
        world.devices[0].storage.delete(LIST, "j")  # type: ignore[attr-defined]
    world.wall.advance(10)
    world.devices[2].storage.delete(LIST, "k")  # type: ignore[attr-defined]
    world.wall.advance(10)
    world.devices[1].storage.write(LIST, "k", {"title": "green tea"})  # type: ignore[attr-defined]
    world.wall.advance(10)
    if paged:
        world.devices[0].storage.delete(LIST, "k")  # type: ignore[attr-defined]
    world.sync(2)
    if not paged:
        world.devices[0].transport = DeleteDuringExchange(world.devices[0].transport.inner, world, 0, "k")
    world.sync(0)
    for index in [1, 0, 1, 2, 0, 1, 2]:
        world.sync(index)
    expected = {} if paged else {"j": {"id": "j", "title": "milk", "done": False}}
    assert [world.server_rows(), *map(world.rows, range(3))] == [expected] * 4


# -- the resolvers of PROTOCOL.md 9 on the server --

EDITED = {"id": "k", "title": "green tea", "done": False}


def delete_and_edit(resolver: ConflictResolver, delete_first: bool, a_syncs_first: bool) -> tuple[World, list]:
    """A (device 0) deletes k and B (device 1) retitles it, in the given order 50 ms apart, offline;
    then they sync in the given order and twice more each. Returns the world and what the devices
    logged: (device, conflict type, winning side) per entry."""
    world = World(2, resolver)
    world.seed({"k": ("tea", False)})
    delete = lambda: world.devices[0].storage.delete(LIST, "k")  # type: ignore[attr-defined]  # noqa: E731
    edit = lambda: world.devices[1].storage.write(LIST, "k", {"title": "green tea"})  # type: ignore[attr-defined]  # noqa: E731
    for step in ([delete, edit] if delete_first else [edit, delete]):
        world.wall.advance(50)
        step()
    logged = []
    for index in ([0, 1] if a_syncs_first else [1, 0]) + [0, 1, 0, 1]:
        logged += [(index, entry.conflict.conflict_type, entry.resolution_source)
                   for entry in world.sync(index).conflict_log]
    assert world.rows(0) == world.rows(1) == world.server_rows()
    return world, logged


BEATEN = [(1, ConflictType.DELETE_VS_MODIFY, ResolutionSource.REMOTE)]
"""B's log when A's newer delete beat its edit before the server took it."""


RESOLVERS = {
    "FieldTimestampWins": FieldTimestampWins,
    "FieldOwnershipWins": lambda: FieldOwnershipWins(local_fields={"title"}, remote_fields={"done"}),
    "LocalWins": LocalWins,
}


@pytest.mark.parametrize("a_syncs_first", [True, False], ids=["A syncs first", "B syncs first"])
@pytest.mark.parametrize("delete_first", [True, False], ids=["delete, then edit", "edit, then delete"])
@pytest.mark.parametrize("resolver", sorted(RESOLVERS))
def test_server_resolvers_follow_hlc_order(resolver: str, delete_first: bool, a_syncs_first: bool) -> None:
    """With FieldTimestampWins, FieldOwnershipWins and LocalWins on the server: a later edit brings the
    row back, a later delete removes it, whoever syncs first. (A row that comes back over a
    tombstone is not a resolver's call; a delete older than the stored row is DELETE_VS_MODIFY,
    where all three keep the server's row.) B logs the conflict when A's newer delete reached the
    server before B's edit; when B's edit got there first, the server had taken it and a newer
    delete simply replaces it."""
    world, logged = delete_and_edit(RESOLVERS[resolver](), delete_first, a_syncs_first)
    assert world.server_rows() == ({"k": EDITED} if delete_first else {})
    assert logged == (BEATEN if not delete_first and a_syncs_first else [])


@pytest.mark.parametrize("a_syncs_first", [True, False], ids=["A syncs first", "B syncs first"])
@pytest.mark.parametrize("delete_first", [True, False], ids=["delete, then edit", "edit, then delete"])
def test_remote_wins_on_the_server_lets_an_incoming_delete_win(delete_first: bool, a_syncs_first: bool) -> None:
    """RemoteWins on the server: the incoming side wins a DELETE_VS_MODIFY by definition, so a delete
    that arrives after a newer edit removes the row. That makes its outcome depend on the order:
    deleted, then edited: back if A (the delete) syncs first (the edit arrives over the tombstone,
    and a row newer than a delete comes back without asking the resolver), gone if B syncs first
    (the older delete arrives against the stored edit, and wins). Edited, then deleted: gone
    either way (the delete is newer, or the edit arrives older than the tombstone). When the older
    delete wins, nobody logs it: the server had taken B's edit, so B sees a plain delete."""
    world, logged = delete_and_edit(RemoteWins(), delete_first, a_syncs_first)
    back = delete_first and a_syncs_first
    assert world.server_rows() == ({"k": EDITED} if back else {})
    assert logged == (BEATEN if not delete_first and a_syncs_first else [])


# -- the conflict log when a delete beats a pending edit --

def only_entry(result: DatabaseResult) -> Any:
    [entry] = result.conflict_log
    return entry


def assert_beaten_edit(result: DatabaseResult, title: str, edit_stamp: int, delete_stamp: int) -> None:
    """B's sync logged that a delete beat its edit of ``title``: key, field, both sides, remote won."""
    entry = only_entry(result)
    conflict = entry.conflict
    assert (conflict.key, conflict.model_label, conflict.conflict_type) == ("k", LIST, ConflictType.DELETE_VS_MODIFY)
    assert conflict.field_conflicts == [FieldConflict("title", title, None, edit_stamp, delete_stamp)]
    assert conflict.local is not None and conflict.local.data["title"] == title and conflict.remote is None
    assert entry.resolution_source is ResolutionSource.REMOTE
    assert result.conflicts == {LIST: ["k"]}


def stamp_of(world: World, index: int, field: str) -> int:
    record = world.devices[index].storage.get_records(LIST, ["k"])["k"]
    return record.timestamps[field]


def tombstone_of(world: World, index: int) -> int:
    return world.devices[index].storage.get_pending_deletes(LIST)["k"]  # type: ignore[attr-defined]


PATHS = ["pushed edit comes back deleted", "pending edit meets a pulled tombstone"]


def first_answer_beats_pending_edit(world: World) -> bool:
    """B's first round did not carry k, and its answer carried k's tombstone: k's edit was still pending."""
    requests, responses = world.devices[1].transport.requests, world.devices[1].transport.responses  # type: ignore[attr-defined]
    sent, answered = requests[0].payload(LIST), responses[0].payload(LIST)
    return (sent is None or "k" not in sent.records) and answered is not None and "k" in answered.deletes


@pytest.mark.parametrize("path", PATHS)
def test_a_newer_delete_that_beats_a_pending_edit_is_logged(path: str) -> None:
    """Our server: B retitles k, then A deletes it; A syncs first. B's edit is beaten: whether B pushes
    it and it comes back deleted, or (B pushing one row per round, another edit first) B pulls the
    tombstone while the edit is still pending, B logs the conflict: the field, the value it lost,
    stamped with the delete's own HLC."""
    world = World(2, batch_size=1 if "pulled" in path else None)
    world.seed({"k": ("tea", False), "j": ("milk", False)})
    if "pulled" in path:
        world.wall.advance(10)
        world.devices[1].storage.write(LIST, "j", {"done": True})  # type: ignore[attr-defined]
    world.wall.advance(10)
    world.devices[1].storage.write(LIST, "k", {"title": "green tea"})  # type: ignore[attr-defined]
    edit = stamp_of(world, 1, "title")
    world.wall.advance(50)
    world.devices[0].storage.delete(LIST, "k")  # type: ignore[attr-defined]
    delete = tombstone_of(world, 0)
    world.sync(0)
    world.devices[1].transport.reset()  # type: ignore[attr-defined]
    result = world.sync(1)
    assert first_answer_beats_pending_edit(world) == ("pulled" in path)
    assert_beaten_edit(result, "green tea", edit, delete)
    world.sync(0)
    assert world.rows(0) == world.rows(1) == world.server_rows() == {"j": {"id": "j", "title": "milk", "done": "pulled" in path}}


@pytest.mark.parametrize("path", PATHS)
def test_against_a_server_that_stamps_deletes_with_its_clock_a_discarded_edit_is_logged(path: str) -> None:
    """LegacyServerEngine (the existing server): A deletes k, B retitles it 50 ms LATER, then A syncs
    first. The server stamps the tombstone with its own clock, newer than B's edit, so the delete
    wins there; B must not lose its edit silently: it logs the conflict (key, field, its value,
    the tombstone's stamp), by either path."""
    world = World(2, server_class=LegacyServerEngine, batch_size=1 if "pulled" in path else None)
    world.seed({"k": ("tea", False), "j": ("milk", False)})
    if "pulled" in path:
        world.wall.advance(10)
        world.devices[1].storage.write(LIST, "j", {"done": True})  # type: ignore[attr-defined]
    world.wall.advance(10)
    world.devices[0].storage.delete(LIST, "k")  # type: ignore[attr-defined]
    delete = tombstone_of(world, 0)
    world.wall.advance(50)
    world.devices[1].storage.write(LIST, "k", {"title": "green tea"})  # type: ignore[attr-defined]
    edit = stamp_of(world, 1, "title")
    assert edit > delete
    world.sync(0)
    [stored] = world.server.storage.get_tombstones(LIST, ["k"]).values()  # type: ignore[attr-defined]
    assert stored > edit, "the existing server's tombstone carries its own clock"
    world.devices[1].transport.reset()  # type: ignore[attr-defined]
    result = world.sync(1)
    assert first_answer_beats_pending_edit(world) == ("pulled" in path)
    assert_beaten_edit(result, "green tea", edit, stored)
    world.sync(0)
    assert world.rows(0) == world.rows(1) == world.server_rows() == {"j": {"id": "j", "title": "milk", "done": "pulled" in path}}


def test_against_our_server_the_same_writes_bring_the_row_back_and_log_nothing() -> None:
    """The writes of the test above, against our server: B's edit is newer than A's delete, so the row
    comes back with it, and nobody logs a conflict."""
    world = World(2)
    world.seed({"k": ("tea", False)})
    world.wall.advance(10)
    world.devices[0].storage.delete(LIST, "k")  # type: ignore[attr-defined]
    world.wall.advance(50)
    world.devices[1].storage.write(LIST, "k", {"title": "green tea"})  # type: ignore[attr-defined]
    logs = [world.sync(0).conflict_log, world.sync(1).conflict_log, world.sync(0).conflict_log]
    assert logs == [[], [], []]
    assert world.rows(0) == world.rows(1) == world.server_rows() == {"k": {"id": "k", "title": "green tea", "done": False}}

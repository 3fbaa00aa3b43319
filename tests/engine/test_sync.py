"""The client round loop against a server engine: convergence, paging, in-flight writes, limits."""

from __future__ import annotations

import pytest

from client_sdk import (
    ClockDriftError,
    DatabaseEngine,
    FieldTimestampWins,
    InvalidParameterError,
    PayloadLimitError,
    PayloadReconciler,
    SyncManifest,
    SyncPhase,
    SyncStage,
    TransportRequiredError,
)
from client_sdk.engine.budget import record_size
from tests.engine.harness import LIST, TASK, Recorder, Wall, make_client, make_server, new_key


def rows(node: DatabaseEngine, label: str = TASK) -> dict[str, dict]:
    return node.storage.rows(label)  # type: ignore[attr-defined]


def two_nodes_sharing_a_row(wall: Wall) -> tuple[DatabaseEngine, DatabaseEngine, DatabaseEngine, str]:
    """A server and nodes a and b on one wall clock, both holding one list row that a wrote."""
    server = make_server(wall)
    a, b = make_client(server, "a", wall), make_client(server, "b", wall)
    key = new_key()
    a.storage.write(LIST, key, {"name": "v1"})
    a.sync()
    b.sync()
    return server, a, b, key


def server_paging_lists(count: int) -> tuple[DatabaseEngine, list[str]]:
    """A server answering in pages of two rows, holding ``count`` list rows another node pushed."""
    server = make_server(batch_size=2)
    other = make_client(server, "other")
    keys = [new_key() for _ in range(count)]
    for key in keys:
        other.storage.write(LIST, key, {"name": key[:4]})
    other.sync()
    return server, keys


def test_three_nodes_converge_field_by_field() -> None:
    wall = Wall()
    server = make_server(wall)
    a, b, c = (make_client(server, name, wall) for name in "abc")
    groceries, milk, bread = new_key(), new_key(), new_key()
    a.storage.write(LIST, groceries, {"name": "Groceries"})
    a.storage.write(TASK, milk, {"list_id": groceries, "title": "milk", "done": False})
    a.storage.write(TASK, bread, {"list_id": groceries, "title": "bread", "done": False})
    a.sync()
    b.sync()
    c.sync()
    wall.advance(10)
    b.storage.write(TASK, milk, {"title": "oat milk"})  # b renames
    c.storage.write(TASK, milk, {"done": True})  # c marks done, concurrently
    a.storage.delete(TASK, bread)  # a deletes another task
    for node in (b, c, a, b, c):
        node.sync()
    expected = {milk: {"id": milk, "list_id": groceries, "title": "oat milk", "done": True}}
    for node in (a, b, c):
        assert rows(node) == expected
        assert rows(node, LIST) == {groceries: {"id": groceries, "name": "Groceries"}}
    assert rows(server) == expected


def test_concurrent_edits_of_one_field_keep_the_later_write() -> None:
    wall = Wall()
    server, a, b, key = two_nodes_sharing_a_row(wall)
    a.storage.write(LIST, key, {"name": "from a"})
    wall.advance(5)
    b.storage.write(LIST, key, {"name": "from b"})
    a.sync()
    b.sync()
    a.sync()
    assert rows(a, LIST)[key]["name"] == rows(b, LIST)[key]["name"] == rows(server, LIST)[key]["name"] == "from b"


@pytest.mark.parametrize(("count", "batch"), [(1000, b) for b in (1, 3, 7, 13, 50, 100, 200)] + [(10_000, 1000)])
def test_paging_delivers_every_record_exactly_once_both_ways(count: int, batch: int) -> None:
    server = make_server(batch_size=batch)
    writer = make_client(server, "writer", batch_size=batch, max_rounds=count + 10)
    keys = [new_key() for _ in range(count)]
    for key in keys:
        writer.storage.write(LIST, key, {"name": key[:8]})
    writer.sync()
    pushed = writer.transport.counts("push", LIST)  # type: ignore[attr-defined]
    assert set(pushed) == set(keys) and set(pushed.values()) == {1}
    assert writer.transport.counts("pull", LIST) == {}  # type: ignore[attr-defined]  # no echo of its own push

    reader = make_client(server, "reader", batch_size=batch, max_rounds=count + 10)
    reader.sync()
    pulled = reader.transport.counts("pull", LIST)  # type: ignore[attr-defined]
    assert set(pulled) == set(keys) and set(pulled.values()) == {1}
    assert rows(reader, LIST) == rows(writer, LIST)

    for node in (writer, reader):
        node.transport.reset()  # type: ignore[attr-defined]
        result = node.sync()
        assert result.rounds == 1
        assert node.transport.requests[0].change_count == 0  # type: ignore[attr-defined]
        assert node.transport.responses[0].change_count == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("batch_bytes", [300, 2_000, 50_000])
def test_pages_are_cut_by_bytes_and_deliver_every_record_exactly_once(batch_bytes: int) -> None:
    server = make_server(batch_size=None, batch_bytes=batch_bytes)
    writer = make_client(server, "writer", batch_size=None, batch_bytes=batch_bytes, max_rounds=1000)
    names = {new_key(): "n" * (length * 37 % 400) for length in range(300)}
    for key, name in names.items():
        writer.storage.write(LIST, key, {"name": name})
    writer.sync()
    reader = make_client(server, "reader", batch_size=None, batch_bytes=batch_bytes, max_rounds=1000)
    reader.sync()

    for node, direction in ((writer, "push"), (reader, "pull")):
        manifests = node.transport.requests if direction == "push" else node.transport.responses  # type: ignore[attr-defined]
        pages = [list(m.payload(LIST).records.values()) for m in manifests if m.payload(LIST) and m.payload(LIST).records]
        assert len(pages) > 1 or batch_bytes == 50_000
        for page in pages:
            assert len(page) == 1 or sum(map(record_size, page)) <= batch_bytes
        seen = node.transport.counts(direction, LIST)  # type: ignore[attr-defined]
        assert set(seen) == set(names) and set(seen.values()) == {1}
    assert rows(reader, LIST) == rows(writer, LIST) == rows(server, LIST)


def test_paging_tombstones_are_delivered_exactly_once() -> None:
    server = make_server(batch_size=7)
    writer = make_client(server, "writer", batch_size=7)
    keys = [new_key() for _ in range(60)]
    for key in keys:
        writer.storage.write(LIST, key, {"name": "x"})
    writer.sync()
    reader = make_client(server, "reader", batch_size=7)
    reader.sync()
    for key in keys[::2]:
        writer.storage.delete(LIST, key)
    for key in keys[1::6]:
        writer.storage.write(LIST, key, {"name": "y"})
    writer.sync()
    reader.transport.reset()  # type: ignore[attr-defined]
    reader.sync()
    pulled = reader.transport.counts("pull", LIST)  # type: ignore[attr-defined]
    assert set(pulled) == set(keys[::2]) | set(keys[1::6]) and set(pulled.values()) == {1}
    assert rows(reader, LIST) == rows(writer, LIST) == rows(server, LIST)


class WriteDuringExchange(Recorder):
    """Makes a local write while the request is on the wire, once."""

    def __init__(self, inner, node_storage, label, key, values) -> None:
        super().__init__(inner)
        self.pending_write = (node_storage, label, key, values)

    def send(self, manifest):
        body = super().send(manifest)
        if self.pending_write:
            storage, label, key, values = self.pending_write
            self.pending_write = None
            storage.write(label, key, values)
        return body


def test_a_write_made_during_a_round_is_never_skipped() -> None:
    wall = Wall()
    server = make_server(wall)
    other = make_client(server, "other", wall)
    node = make_client(server, "node", wall)
    existing, late = new_key(), new_key()
    node.storage.write(LIST, existing, {"name": "before"})
    node.sync()
    other.sync()
    other.storage.write(LIST, existing, {"name": "from other"})  # gives the server something newer to send
    other.sync()
    wall.advance(50)
    node.transport = WriteDuringExchange(node.transport.inner, node.storage, LIST, late, {"name": "written mid-round"})  # type: ignore[attr-defined]
    node.storage.write(LIST, existing, {"name": "edited"})
    node.sync()  # the write made meanwhile stays pending (pushed by this sync or, at the latest, by the next)
    assert node.storage.get_pending_keys(LIST, [late]) == {late} or late in rows(server, LIST)
    node.sync()
    other.sync()
    assert rows(other, LIST)[late] == {"id": late, "name": "written mid-round"}
    assert rows(server, LIST) == rows(node, LIST) == rows(other, LIST)


def test_pages_are_pulled_ahead_and_a_write_made_while_one_is_applied_is_still_pushed() -> None:
    server, keys = server_paging_lists(7)
    late = new_key()
    writes: list[str] = []

    def write_once(stage: SyncStage, current: int, total: int) -> None:
        # while the last page is applied, after the (quiet) round that follows was requested
        if stage is SyncStage.MUTATE and len(rows(node, LIST)) == len(keys) and not writes:
            writes.append(late)
            node.storage.write(LIST, late, {"name": "written while applying"})

    node = make_client(server, "node", progress=write_once)
    node.sync()
    pulls = [request for request in node.transport.requests if not request.payloads]  # type: ignore[attr-defined]
    assert len(pulls) >= 4  # the pages (2 rows each) came one round each, requested while the previous one applied
    assert rows(server, LIST)[late] == {"id": late, "name": "written while applying"}
    assert node.storage.get_pending(LIST) == []  # type: ignore[attr-defined]
    assert rows(node, LIST) == rows(server, LIST)


def test_a_failure_while_pages_are_applied_keeps_what_was_committed_and_the_next_sync_resumes_exactly_once() -> None:
    server, keys = server_paging_lists(14)

    def fail_on_the_fourth_page(stage: SyncStage, current: int, total: int) -> None:
        if stage is SyncStage.MUTATE and len(node.transport.responses) == 4:  # type: ignore[attr-defined]
            raise RuntimeError("disk full")

    node = make_client(server, "node", progress=fail_on_the_fourth_page)
    with pytest.raises(RuntimeError, match="disk full"):
        node.sync()
    kept = set(rows(node, LIST))
    assert len(kept) < 6  # the failed page, and any page committed with it, is undone
    node.progress = None
    node.transport.reset()  # type: ignore[attr-defined]
    node.sync()
    delivered = node.transport.counts("pull", LIST)  # type: ignore[attr-defined]
    assert set(delivered) == set(keys) - kept and set(delivered.values()) == {1}
    assert rows(node, LIST) == rows(server, LIST)


class PullsFailAfter(Recorder):
    """Carries ``good`` requests, then fails every one: a link that goes down in the middle of a pull."""

    def __init__(self, inner: object, good: int) -> None:
        super().__init__(inner)
        self.good = good

    def send(self, manifest: SyncManifest) -> bytes:
        if len(self.requests) >= self.good:
            raise ConnectionError("link down")
        return super().send(manifest)


def test_a_link_that_fails_in_the_middle_of_a_pull_keeps_every_page_applied_before_it() -> None:
    server, keys = server_paging_lists(14)
    node = make_client(server, "node")
    node.transport = PullsFailAfter(node.transport.inner, good=3)  # type: ignore[attr-defined]
    with pytest.raises(ConnectionError, match="link down"):
        node.sync()
    kept = set(rows(node, LIST))
    assert len(kept) == 6  # three pages of two rows: committed before the failure was met
    node.transport = Recorder(node.transport.inner)  # type: ignore[attr-defined]
    node.sync()
    delivered = node.transport.counts("pull", LIST)  # type: ignore[attr-defined]
    assert set(delivered) == set(keys) - kept and set(delivered.values()) == {1}
    assert rows(node, LIST) == rows(server, LIST)


def test_dry_run_changes_nothing_anywhere() -> None:
    server = make_server()
    a, b = make_client(server, "a"), make_client(server, "b")
    a.storage.write(LIST, new_key(), {"name": "pushed by a"})
    a.sync()
    mine = new_key()
    b.storage.write(LIST, mine, {"name": "only on b"})
    before = (b.storage.get_checkpoint(), rows(b, LIST), rows(server, LIST))
    result = b.sync(dry_run=True)
    assert result.dry_run and result.pushed == {LIST: [mine]} and result.count("created") == 1
    assert (b.storage.get_checkpoint(), rows(b, LIST), rows(server, LIST)) == before
    assert b.storage.get_pending_keys(LIST, [mine]) == {mine}


def test_clock_drift_aborts_without_moving_the_checkpoint() -> None:
    server_wall, client_wall = Wall(), Wall()
    server = make_server(server_wall)
    node = make_client(server, "drifting", client_wall)
    node.storage.write(LIST, new_key(), {"name": "x"})
    node.sync()
    checkpoint = node.storage.get_checkpoint()
    node.storage.write(LIST, new_key(), {"name": "y"})
    client_wall.advance(301_000)
    with pytest.raises(ClockDriftError, match=r"our clock: \d+, theirs: \d+"):
        node.sync()
    assert node.storage.get_checkpoint() == checkpoint
    assert len(node.storage.get_pending(LIST)) == 1


def test_payload_limits_abort_before_anything_is_sent() -> None:
    server = make_server()
    node = make_client(server, "big", payload_records_max=5)
    for _ in range(6):
        node.storage.write(LIST, new_key(), {"name": "x"})
    with pytest.raises(PayloadLimitError, match="batch_size"):
        node.sync()
    assert node.transport.requests == [] and node.storage.get_checkpoint() == 0  # type: ignore[attr-defined]
    byte_limited = make_client(server, "bytes", payload_bytes_max=100)
    byte_limited.storage.write(LIST, new_key(), {"name": "x" * 200})
    with pytest.raises(PayloadLimitError):
        byte_limited.sync()
    paged = make_client(server, "paged", payload_records_max=5, batch_size=5)
    for _ in range(6):
        paged.storage.write(LIST, new_key(), {"name": "x"})
    assert paged.sync().count("pushed") == 6


class Exploding(FieldTimestampWins):
    def __init__(self, bad_key: str) -> None:
        super().__init__()
        self.bad_key = bad_key

    def resolve(self, conflict):
        if conflict.key == self.bad_key:
            raise RuntimeError("boom")
        return super().resolve(conflict)


def test_a_resolver_that_raises_yields_one_error_and_the_rest_applies() -> None:
    wall = Wall()
    bad, good = new_key(), new_key()
    server = make_server(wall, reconciler=PayloadReconciler(Exploding(bad)))
    a, b = make_client(server, "a", wall), make_client(server, "b", wall)
    for key in (bad, good):
        a.storage.write(LIST, key, {"name": "v1"})
    a.sync()
    b.sync()
    for key in (bad, good):
        a.storage.write(LIST, key, {"name": "a"})
    a.sync()
    wall.advance(5)
    for key in (bad, good):
        b.storage.write(LIST, key, {"name": "b", "extra": key})
    # b's checkpoint predates a's edit, so the server sees both sides modified: a conflict per key
    result = b.sync()
    assert [error["key"] for error in result.errors] == [bad]
    assert "boom" in result.errors[0]["message"]
    assert rows(server, LIST)[good]["name"] == "b"


def test_phases_are_reported_in_order() -> None:
    phases: list[SyncPhase] = []
    server = make_server()
    node = make_client(server, "p", on_phase=phases.append)
    node.storage.write(LIST, new_key(), {"name": "x"})
    node.sync()
    assert phases[0] is SyncPhase.COLLECTING and phases[-1] is SyncPhase.COMPLETE
    assert SyncPhase.COMMITTING in phases and SyncPhase.FAILED not in phases


def test_sync_without_transport_is_a_clear_error() -> None:
    server = make_server()
    with pytest.raises(TransportRequiredError):
        server.sync()


@pytest.mark.parametrize(
    "options",
    [{"batch_size": 0}, {"batch_bytes": -1}, {"clock_drift_max": -5}, {"batch_size": True}, {"max_rounds": 0},
     {"on_phase": 3}, {"transport": object()}, {"payload_records_max": 1.5}, {"identity_field": ""}],
)
def test_constructor_arguments_are_validated(options: dict) -> None:
    with pytest.raises(InvalidParameterError):
        make_server(**options)


def test_a_push_the_server_overrode_is_in_the_clients_conflict_log() -> None:
    wall = Wall()
    server, a, b, key = two_nodes_sharing_a_row(wall)
    b.storage.write(LIST, key, {"name": "b's older edit"})
    wall.advance(10)
    a.storage.write(LIST, key, {"name": "a's newer edit"})
    a.sync()
    result = b.sync()
    assert result.conflicts == {LIST: [key]}
    [entry] = result.conflict_log
    [clash] = entry.conflict.field_conflicts
    assert (clash.field_name, clash.local_value, clash.remote_value) == ("name", "b's older edit", "a's newer edit")
    assert rows(b, LIST)[key]["name"] == "a's newer edit"


@pytest.mark.parametrize("edit_after_delete", [False, True])
def test_delete_against_a_concurrent_edit_is_last_writer_wins(edit_after_delete: bool) -> None:
    wall = Wall()
    server, a, b, key = two_nodes_sharing_a_row(wall)
    wall.advance(10)
    if not edit_after_delete:
        b.storage.write(LIST, key, {"name": "edited before the delete"})
        wall.advance(10)
    a.storage.delete(LIST, key)
    a.sync()
    wall.advance(10)
    if edit_after_delete:
        b.storage.write(LIST, key, {"name": "edited after the delete"})
    b.sync()
    a.sync()
    expected = {key: {"id": key, "name": "edited after the delete"}} if edit_after_delete else {}
    assert rows(a, LIST) == rows(b, LIST) == rows(server, LIST) == expected


def test_a_row_merged_mid_sync_and_pushed_next_round_keeps_both_edits() -> None:
    """B pages its push one record a round; the server's newer copy of t0 arrives in round one and is
    merged with B's pending edit; round two pushes the merge, which must not lose B's field."""
    wall = Wall()
    server = make_server(wall, batch_size=1)
    a = make_client(server, "a", wall, batch_size=1)
    b = make_client(server, "b", wall, batch_size=1)
    a.storage.write(LIST, "t0", {"title": "x", "done": False})
    a.storage.write(LIST, "t9", {"title": "y", "done": False})
    a.sync()
    b.sync()
    for node, key, values in ((b, "t9", {"title": "other"}), (b, "t0", {"done": True}), (a, "t0", {"title": "renamed"})):
        wall.advance(1000)
        node.storage.write(LIST, key, values)
    a.sync()
    b.sync()
    a.sync()
    expected = {"id": "t0", "title": "renamed", "done": True}
    assert rows(a, LIST)["t0"] == rows(b, LIST)["t0"] == rows(server, LIST)["t0"] == expected


def test_answers_that_fill_the_page_exactly_end_the_round() -> None:
    """B's edits lose to A's newer ones, and the server's answers to them fill its page exactly:
    nothing else is left to send, so the round says so (no has_more, no second copy of the answers)."""
    a_wall, b_wall = Wall(), Wall()
    server = make_server(a_wall, batch_size=2)
    a, b = make_client(server, "a", a_wall, batch_size=2), make_client(server, "b", b_wall, batch_size=2)
    keys = [new_key(), new_key()]
    for key in keys:
        a.storage.write(LIST, key, {"name": "v1"})
    a.sync()
    b.sync()
    b_wall.advance(10)
    for key in keys:
        b.storage.write(LIST, key, {"name": "b's older edit"})
    a_wall.advance(1000)
    for key in keys:
        a.storage.write(LIST, key, {"name": "a's newer edit"})
    a.sync()
    b.transport.reset()  # type: ignore[attr-defined]
    b.sync()
    first = b.transport.responses[0]  # type: ignore[attr-defined]
    assert set(first.payload(LIST).records) == set(keys) and not first.has_more
    assert set(b.transport.counts("pull", LIST).values()) == {1}  # type: ignore[attr-defined]
    assert rows(b, LIST) == rows(a, LIST) == rows(server, LIST)

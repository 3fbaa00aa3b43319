"""PROTOCOL.md 14: sync() ends in a few rounds and never re-sends what the server acknowledged."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk import DatabaseEngine, SyncAbortedError
from tests.engine.harness import (
    LIST,
    LegacyServerEngine,
    Wall,
    make_client,
    make_legacy_client,
    make_server,
    new_key,
)

OPS = st.lists(st.tuples(st.sampled_from(["insert", "update", "delete"]), st.integers(0, 9), st.text(max_size=5)),
               min_size=1, max_size=30)


def apply_ops(node: DatabaseEngine, keys: list[str], ops: list[tuple[str, int, str]]) -> None:
    for op, index, text in ops:
        key = keys[index]
        if op == "delete":
            node.storage.delete(LIST, key)  # type: ignore[attr-defined]
        else:
            node.storage.write(LIST, key, {"name": text, "op": op})  # type: ignore[attr-defined]


def assert_nothing_resent(node: DatabaseEngine) -> None:
    sent: set[tuple[str, int]] = set()
    for request in node.transport.requests:  # type: ignore[attr-defined]
        for payload in request.payloads:
            versions = {(k, r.last_modified) for k, r in payload.records.items()} | set(payload.deletes.items())
            assert not versions & sent, "a change the server acknowledged was sent again"
            sent |= versions


@pytest.mark.parametrize("server_class", [LegacyServerEngine, DatabaseEngine], ids=["existing-server", "our-server"])
@settings(max_examples=40, deadline=None)
@given(history=OPS, more=OPS)
def test_any_mix_of_writes_ends_within_three_rounds(server_class, history, more) -> None:
    wall = Wall()
    server = make_server(wall, engine_class=server_class)
    node = make_client(server, "n", wall)
    keys = [new_key() for _ in range(10)]
    apply_ops(node, keys, history)
    assert node.sync().rounds <= 3
    wall.advance(3)
    apply_ops(node, keys, more)
    node.transport.reset()  # type: ignore[attr-defined]
    result = node.sync()
    assert result.rounds <= 3
    assert_nothing_resent(node)
    assert node.storage.rows(LIST) == server.storage.rows(LIST)  # type: ignore[attr-defined]


def test_delete_livelock_of_the_existing_client_does_not_catch_ours() -> None:
    """The existing client re-sends its tombstone forever against the existing server (PROTOCOL.md 14); ours ends."""
    key = new_key()
    ours = make_client(make_server(engine_class=LegacyServerEngine), "ours")
    ours.storage.write(LIST, key, {"name": "doomed"})  # type: ignore[attr-defined]
    ours.sync()
    ours.storage.delete(LIST, key)  # type: ignore[attr-defined]
    ours.transport.reset()  # type: ignore[attr-defined]
    assert ours.sync().rounds <= 3
    assert_nothing_resent(ours)


def test_the_existing_client_finishes_against_our_server() -> None:
    key = new_key()
    theirs = make_legacy_client(make_server(), "theirs", max_rounds=10)
    theirs.storage.write(LIST, key, {"name": "doomed"})  # type: ignore[attr-defined]
    theirs.sync()
    theirs.storage.delete(LIST, key)  # type: ignore[attr-defined]
    assert theirs.sync().rounds <= 3


class AlwaysMore:
    """A server that claims to have more forever."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def exchange(self, manifest):
        response = self.inner.exchange(manifest)
        response.has_more = True
        return response.seal()


def test_a_runaway_server_hits_the_round_cap_with_a_clear_error() -> None:
    node = make_client(make_server(), "n", max_rounds=25)
    node.transport = AlwaysMore(node.transport)
    node.storage.write(LIST, new_key(), {"name": "x"})  # type: ignore[attr-defined]
    checkpoint_before = node.storage.get_checkpoint()
    with pytest.raises(SyncAbortedError, match="did not settle after 25 rounds"):
        node.sync()
    assert node.storage.get_checkpoint() >= checkpoint_before


def test_many_nodes_random_histories_converge() -> None:
    rng = random.Random(7)
    wall = Wall()
    server = make_server(wall)
    nodes = [make_client(server, f"n{i}", wall) for i in range(4)]
    keys = [new_key() for _ in range(15)]
    for _ in range(300):
        node = rng.choice(nodes)
        key = rng.choice(keys)
        roll = rng.random()
        if roll < 0.15:
            node.storage.delete(LIST, key)  # type: ignore[attr-defined]
        elif roll < 0.8:
            node.storage.write(LIST, key, {rng.choice("abc"): rng.randint(0, 9)})  # type: ignore[attr-defined]
        else:
            node.sync()
        wall.advance(rng.randint(0, 3))
    for _ in range(2):
        for node in nodes:
            node.sync()
    for node in nodes:
        assert node.storage.rows(LIST) == server.storage.rows(LIST)  # type: ignore[attr-defined]

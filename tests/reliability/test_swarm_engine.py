"""The convergence swarm over the engine with in-memory nodes: fast, so it runs many seeds."""

from __future__ import annotations

import pytest

from tests.engine.harness import LIST, Wall, make_client, make_server
from tests.reliability.inflight import HookedTransport
from tests.reliability.swarm import Swarm


class MemoryDevice:
    def __init__(self, server, name: str, base: Wall, batch_size: int | None = None) -> None:
        self.name = name
        self.base = base
        self.offset = 0
        self.node = make_client(server, name, wall=lambda: self.base.ms + self.offset,  # type: ignore[arg-type]
                                batch_size=batch_size)

    def write(self, key, values, *, second_writer=False):
        self.base.advance(1)
        self.node.storage.write(LIST, key, values)

    def delete(self, key, *, second_writer=False):
        self.base.advance(1)
        self.node.storage.delete(LIST, key)

    def sync(self):
        self.base.advance(1)
        self.node.sync()

    def sync_during(self, point, write):
        """A sync through :class:`HookedTransport` (so not pipelined), writing once at ``point``."""
        transport = self.node.transport
        hooked = HookedTransport(transport)
        hooked.at_next_exchange(point, write)
        self.node.transport = hooked
        try:
            self.sync()
        finally:
            self.node.transport = transport

    def rows(self):
        return self.node.storage.rows(LIST)

    def stamps(self, key):
        record = self.node.storage.get_records(LIST, [key]).get(key)
        return dict(record.timestamps) if record else {}

    def tombstone(self, key):
        return self.node.storage.get_tombstones(LIST, [key]).get(key)

    def shift_clock(self, offset_ms):
        self.offset = offset_ms


class MemoryServer:
    def __init__(self, engine) -> None:
        self.engine = engine

    def rows(self):
        return self.engine.storage.rows(LIST)

    def tombstones(self):
        return self.engine.storage.get_deletes_since(LIST, 0)


PAGES = [None, 1, 2, 5]
"""Page sizes the seeds cycle through, on both sides: paging interleaves pushes, pulls and merges."""


@pytest.mark.parametrize("seed", range(40))
def test_swarm_converges_to_the_oracle(seed: int) -> None:
    wall = Wall()
    page = PAGES[seed % len(PAGES)]
    server = make_server(wall, batch_size=page)
    devices = [MemoryDevice(server, f"d{i}", wall, batch_size=page) for i in range(1 + seed % 5)]
    swarm = Swarm(seed, devices, MemoryServer(server))  # type: ignore[arg-type]
    try:
        swarm.run(500)
        swarm.check()
    except AssertionError:
        print("\n".join(swarm.log[-40:]))
        raise

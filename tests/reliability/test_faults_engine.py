"""The swarm still converges when 30% of rounds fail on the way out or back."""

from __future__ import annotations

import random
from collections import Counter

from client_sdk import SyncError
from tests.engine.harness import Wall, make_server
from tests.reliability.faults import FAULTS, FaultyTransport
from tests.reliability.swarm import Swarm
from tests.reliability.test_swarm_engine import MemoryDevice, MemoryServer


class FlakyDevice(MemoryDevice):
    """A device whose syncs go through a faulty network; a failed sync is simply retried later."""

    def __init__(self, server, name, base, rng) -> None:
        super().__init__(server, name, base)
        self.faults = FaultyTransport(self.node.transport, rng)
        self.node.transport = self.faults
        self.failed = 0

    def sync(self):
        try:
            super().sync()
        except SyncError:
            self.failed += 1


def test_swarm_converges_through_a_30_percent_fault_rate() -> None:
    rng = random.Random(2024)
    wall = Wall()
    server = make_server(wall)
    devices = [FlakyDevice(server, f"d{i}", wall, rng) for i in range(4)]
    swarm = Swarm(99, devices, MemoryServer(server))  # type: ignore[arg-type]
    while sum(d.faults.rounds for d in devices) < 1000:
        swarm.step()
    for device in devices:
        device.faults.rate = 0.0  # the network heals
    swarm.settle()
    swarm.check()
    injected = sum((d.faults.injected for d in devices), start=Counter())
    assert set(injected) == set(FAULTS) and sum(injected.values()) >= 200
    assert sum(d.failed for d in devices) > 0

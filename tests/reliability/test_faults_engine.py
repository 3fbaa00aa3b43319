"""The swarm still converges when 30% of rounds fail on the way out or back."""

from __future__ import annotations

import random

from client_sdk import SyncError
from tests.engine.harness import Wall, make_server
from tests.reliability.faults import FaultyTransport, converge_through_faults
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
    converge_through_faults(swarm, [device.faults for device in devices])
    assert sum(d.failed for d in devices) > 0

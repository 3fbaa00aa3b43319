"""A transport that fails like a bad network: for the faults a loopback test cannot cause on demand."""

from __future__ import annotations

import json
import random
from collections import Counter

from client_sdk import SyncManifest
from client_sdk.errors import InvalidResponseError, RetryExhaustedError
from client_sdk.transport.binding import read_response
from tests.reliability.swarm import Swarm

FAULTS = ("drop_request", "drop_response", "timeout", "server_error", "truncate", "corrupt")


class FaultyTransport:
    """Wraps a real transport; each round fails with probability ``rate``, in one of six ways.

    ``drop_request`` never reaches the server; ``drop_response`` and ``timeout``
    reach it (the server commits) but the answer is lost; ``server_error`` is a
    5xx before processing; ``truncate`` and ``corrupt`` deliver a damaged body
    that the client must refuse. Failures surface as the SDK's own exceptions,
    exactly as HttpTransport raises them after its retries.
    """

    def __init__(self, inner, rng: random.Random, rate: float = 0.3) -> None:
        self.inner = inner
        self.rng = rng
        self.rate = rate
        self.injected: Counter[str] = Counter()
        self.rounds = 0

    def exchange(self, manifest: SyncManifest) -> SyncManifest:
        self.rounds += 1
        fault = self.rng.choice(FAULTS) if self.rng.random() < self.rate else None
        if fault is not None:
            self.injected[fault] += 1
        if fault in ("drop_request", "server_error"):
            raise RetryExhaustedError(f"injected fault: {fault}", status=503 if fault == "server_error" else None)
        response = self.inner.exchange(manifest)
        if fault in ("drop_response", "timeout"):
            raise RetryExhaustedError(f"injected fault: {fault} after the server committed")
        if fault is None:
            return response
        body = json.dumps(response.to_dict())
        if fault == "truncate":
            body = body[: self.rng.randint(0, max(len(body) - 1, 0))]
        else:
            position = self.rng.randrange(len(body))
            body = body[:position] + self.rng.choice("0123456789x\"{") + body[position + 1:]
        try:
            raw = json.loads(body)
        except ValueError as exc:
            raise InvalidResponseError(f"injected fault: {fault}: response is not JSON") from exc
        return read_response(raw)


def converge_through_faults(swarm: Swarm, links: list[FaultyTransport], rounds: int = 1000) -> Counter[str]:
    """Run the swarm until its devices made ``rounds`` rounds over faulty ``links``, heal the network,
    then settle and check convergence; every kind of fault must have struck, 200 times at least."""
    while sum(link.rounds for link in links) < rounds:
        swarm.step()
    for link in links:
        link.rate = 0.0
    swarm.settle()
    swarm.check()
    injected = sum((link.injected for link in links), start=Counter())
    assert set(injected) == set(FAULTS) and sum(injected.values()) >= 200
    return injected

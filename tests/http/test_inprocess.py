"""InProcessTransport answers and refuses exactly as server_stub does over HTTP."""

from __future__ import annotations

import pytest

from client_sdk import ClockDriftError, ManifestChecksumError, ModelPayload, SyncAbortedError, SyncManifest, SyncRecord
from client_sdk.transport import InProcessTransport
from tests.engine.harness import Wall, make_server


def test_refusals_carry_the_http_status_and_text_and_keep_their_type() -> None:
    wall = Wall()
    transport = InProcessTransport(make_server(wall))
    drifting = SyncManifest("device-a", 0, node_time=wall() // 1000 - 3600).seal()
    with pytest.raises(ClockDriftError) as drift:
        transport.exchange(drifting)
    tampered = SyncManifest("device-a", 0, node_time=wall() // 1000).seal()
    tampered.checksum = "0" * 64
    with pytest.raises(ManifestChecksumError) as checksum:
        transport.exchange(tampered)
    for caught in (drift, checksum):
        assert (caught.value.status, caught.value.server_error) == (409, "Sync aborted")
    with pytest.raises(SyncAbortedError) as malformed:
        transport.exchange(SyncManifest("device-a", checkpoint=-1))
    assert malformed.value.status == 400 and malformed.value.server_error.startswith("Invalid manifest: checkpoint")


def test_an_answer_carries_the_servers_per_key_errors() -> None:
    wall = Wall()
    transport = InProcessTransport(make_server(wall))
    unknown = ModelPayload("x.Y", {"k": SyncRecord("k", {"id": "k"}, {"id": 1})})
    answer = transport.exchange(SyncManifest("d", 0, node_time=wall() // 1000, payloads=[unknown]).seal())
    assert [error["key"] for error in answer.errors] == ["k"] and answer.checksum == answer.compute_checksum()

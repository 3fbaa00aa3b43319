"""A hostile or broken server answer gets a typed SyncError and leaves the local database unchanged."""

from __future__ import annotations

import copy

import pytest

from client_sdk import SyncError, SyncManifest
from client_sdk.protocol import checksum_of
from client_sdk.transport.binding import read_response
from tests.engine.harness import LIST, make_client, make_server, new_key


class Tamper:
    """Passes the round to the real server, then corrupts the answer as it would arrive on the wire."""

    def __init__(self, inner, corrupt) -> None:
        self.inner = inner
        self.corrupt = corrupt

    def exchange(self, manifest: SyncManifest) -> SyncManifest:
        body = self.inner.exchange(manifest).to_dict()
        return read_response(self.corrupt(copy.deepcopy(body)))


def _with_record(body: dict, record: dict, reseal: bool = True) -> dict:
    body["payloads"] = [{"model_label": LIST, "records": {"k1": record}, "deletes": {}}]
    if reseal:
        body["checksum"] = checksum_of(body)
    return body


def _resealed(body: dict) -> dict:
    body["checksum"] = checksum_of(body)
    return body


CORRUPTIONS = {
    "wrong checksum": lambda b: {**b, "checksum": "0" * 64},
    "missing checksum": lambda b: {k: v for k, v in b.items() if k != "checksum"},
    "checksum of other content": lambda b: {**b, "checkpoint": b["checkpoint"] + 1},
    "not an object": lambda b: [b],
    "missing node_id": lambda b: {k: v for k, v in b.items() if k != "node_id"},
    "negative checkpoint": lambda b: {**b, "checkpoint": -1},
    "checkpoint as text": lambda b: {**b, "checkpoint": "12"},
    "bool timestamp": lambda b: _with_record(b, {"data": {"id": "k1"}, "timestamps": {"id": True}}),
    "huge timestamp": lambda b: _with_record(b, {"data": {"id": "k1"}, "timestamps": {"id": 2**64}}),
    "data not an object": lambda b: _with_record(b, {"data": [1], "timestamps": {}}),
    "duplicate labels": lambda b: _resealed({**b, "payloads": [{"model_label": LIST}, {"model_label": LIST}]}),
    "clock far in the future": lambda b: _resealed({**b, "node_time": b["node_time"] + 3600}),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_a_bad_answer_is_refused_and_nothing_changes(corrupt) -> None:
    server = make_server()
    peer = make_client(server, "peer")
    for _ in range(3):
        peer.storage.write(LIST, new_key(), {"name": "from the server"})  # gives the answer something to carry
    peer.sync()
    node = make_client(server, "node")
    mine = new_key()
    node.storage.write(LIST, mine, {"name": "local"})
    node.transport = Tamper(node.transport, corrupt)
    before = (node.storage.get_checkpoint(), node.storage.rows(LIST), node.storage.get_pending_keys(LIST, [mine]))
    with pytest.raises(SyncError):
        node.sync()
    after = (node.storage.get_checkpoint(), node.storage.rows(LIST), node.storage.get_pending_keys(LIST, [mine]))
    assert after == before


def test_a_model_the_device_does_not_track_is_skipped_not_a_crash() -> None:
    server = make_server()
    node = make_client(server, "node")
    label = "evil.Model'; DROP TABLE x;--"
    answers = iter([lambda b: _resealed({**b, "payloads": [
        {"model_label": label, "records": {"k": {"data": {"id": "k"}, "timestamps": {"id": 5}}}}]})])
    node.transport = Tamper(node.transport, lambda b: next(answers, lambda same: same)(b))
    result = node.sync()
    assert result.ok and result.skipped == {label: ["k"]}

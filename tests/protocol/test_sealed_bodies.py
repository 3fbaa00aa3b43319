"""A sealed manifest goes on the wire as the canonical text its checksum hashed; a reader verifies that text
as received instead of encoding the content again, and falls back to the canonical encoding otherwise."""

from __future__ import annotations

import json

import pytest

from client_sdk import ManifestChecksumError, ModelPayload, SyncManifest, SyncRecord
from client_sdk.protocol.sealed import Preview, parse_sealed, preview_sealed
from client_sdk.protocol.wire import checksum_of
from client_sdk.transport.binding import read_response_body


def sealed() -> SyncManifest:
    records = {
        "k1": SyncRecord("k1", {"id": "k1", "title": 'say "hi"], "x": 1', "done": True}, {"id": 5, "title": 7, "done": 6}),
        "k2": SyncRecord("k2", {"id": "k2", "title": "caf\u00e9 \u2615", "done": None}, {"id": 5, "title": 5, "done": 5}),
    }
    payloads = [ModelPayload("todo.Task", records, {"gone": 9})]
    return SyncManifest("server", checkpoint=42, node_time=1_790_000_000, payloads=payloads,
                        after_keys={"todo.Task": {"key": "k2", "timestamp": 7}}, has_more=True).seal()


def body_of(manifest: SyncManifest, **extra: object) -> bytes:
    return manifest.to_json(**extra).encode("ascii")


def test_the_wire_text_starts_with_the_canonical_text_the_checksum_hashed() -> None:
    manifest = sealed()
    raw, digest = parse_sealed(body_of(manifest, ok=True, errors=[], skipped=0))
    assert digest == manifest.checksum == checksum_of(raw)
    assert raw == {**json.loads(manifest.to_json()), "ok": True, "errors": [], "skipped": 0}
    assert read_response_body(body_of(manifest, ok=True)) == manifest


def test_a_manifest_read_from_the_wire_encodes_the_same_content() -> None:
    manifest = sealed()
    received = SyncManifest.from_dict(json.loads(manifest.to_json()))  # not sealed here: encoded afresh
    assert json.loads(received.to_json()) == json.loads(manifest.to_json())


def test_a_body_in_another_layout_is_verified_by_its_canonical_encoding() -> None:
    manifest = sealed()
    compact = json.dumps(dict(reversed(list(manifest.to_dict().items()))), separators=(",", ":")).encode()
    raw, digest = parse_sealed(compact)
    assert digest is None and raw == manifest.to_dict()
    assert read_response_body(compact) == manifest


def test_changed_covered_text_fails_the_checksum() -> None:
    body = body_of(sealed()).replace(b'"checkpoint": 42', b'"checkpoint": 43')
    assert parse_sealed(body)[1] is None
    with pytest.raises(ManifestChecksumError):
        read_response_body(body)


def test_a_covered_key_repeated_after_the_sealed_text_is_not_trusted() -> None:
    manifest = sealed()
    body = manifest.to_json(payloads=[]).encode("ascii")  # the decoder keeps the last "payloads": the empty one
    assert parse_sealed(body)[1] is None
    with pytest.raises(ManifestChecksumError):
        read_response_body(body)


def test_the_preview_of_a_sealed_answer_is_what_the_next_pull_needs() -> None:
    manifest = sealed()
    assert preview_sealed(body_of(manifest, ok=True, errors=[], skipped=0)) == Preview(
        checkpoint=42, after_keys={"todo.Task": {"key": "k2", "timestamp": 7}}, has_more=True, empty=False
    )
    caught_up = SyncManifest("server", checkpoint=99, node_time=1).seal()
    assert preview_sealed(body_of(caught_up)) == Preview(checkpoint=99, after_keys={}, has_more=False, empty=True)


@pytest.mark.parametrize("body", [
    b'{"checkpoint":42,"payloads":[],"has_more":false}',  # another layout
    b'{"checkpoint": 42, "node_id": "s", "payloads": [],"has_more": "yes"}',
    b'{"checkpoint": 42, "node_id": "s", "payloads": [],"after_keys": {"m": {"key": 1}}, "has_more": true}',
    b'{"checkpoint": 42, "node_id": "s", "payloads": [],"has_more": tru',
])
def test_no_preview_of_anything_else(body: bytes) -> None:
    assert preview_sealed(body) is None

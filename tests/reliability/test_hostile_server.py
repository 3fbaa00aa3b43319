"""Hostile requests to server_stub: always a 4xx with a clear error, never a 500, the database unchanged.

Over 1,000 generated requests (Hypothesis) plus hand-written ones, against a real server on loopback.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from client_sdk import HybridLogicalClock, ModelPayload, SyncManifest, SyncRecord
from client_sdk.protocol import checksum_of
from client_sdk.protocol.wire import META_FIELDS
from tests.reliability.world import COLUMNS, LABEL, SCHEMA, running_server
from tests.serverdb import Database, server_query, server_snapshot

CLOCK = HybridLogicalClock()
EXAMPLES = 260
SQLISH = ["'; DROP TABLE items; --", 'title" = 1; --', "x\x00y", "items", "_sync_clock", "\"; DELETE FROM items", "🙂"]
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def valid_manifest(**payload_fields: Any) -> dict:
    stamp = CLOCK.now()
    record = SyncRecord("k1", {"id": "k1", "title": "ok"}, {"id": stamp, "title": stamp})
    manifest = SyncManifest("device-x", 0, node_time=int(time.time()), payloads=[ModelPayload(LABEL, {"k1": record})])
    return manifest.seal().to_dict()


def snapshot(database: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Everything but the clock row (a parseable manifest may move the server's clock, harmlessly)."""
    return server_snapshot(database, skip=("_sync_clock",))


@pytest.fixture(scope="module")
def server(module_server_database: Callable[[], Database]) -> Iterator[tuple[str, Database]]:
    database = module_server_database()
    with running_server(database, request_bytes_max=256 * 1024) as url:
        yield url, database


def send(url: str, body: bytes, *, gzipped: bool = False, content_type: str = "application/json") -> httpx.Response:
    headers = {"Content-Type": content_type}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return httpx.post(url, content=body, headers=headers, timeout=30)


def assert_refused(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:200])
    body = response.json()
    assert body["ok"] is False and isinstance(body["error"], str) and body["error"]


@FUZZ
@given(body=st.binary(max_size=300))
def test_random_bytes(server, body: bytes) -> None:
    url, database = server
    before = snapshot(database)
    response = send(url, body)
    assert_refused(response)
    assert snapshot(database) == before


@FUZZ
@given(value=json_values)
def test_any_json_that_is_not_a_sealed_manifest(server, value: Any) -> None:
    url, database = server
    before = snapshot(database)
    assert_refused(send(url, json.dumps(value).encode()))
    assert snapshot(database) == before


@FUZZ
@given(field=st.sampled_from(["node_id", "checkpoint", "node_time", "payloads", "after_keys", "has_more"]),
       value=json_values, reseal=st.booleans())
def test_a_manifest_with_one_field_of_the_wrong_shape(server, field: str, value: Any, reseal: bool) -> None:
    url, database = server
    body = valid_manifest()
    body[field] = value
    if reseal:
        body["checksum"] = checksum_of(body)
    before = snapshot(database)
    response = send(url, json.dumps(body).encode())
    if response.status_code == 200:  # the value happened to be valid (e.g. an empty list of payloads)
        assert response.json()["ok"] in (True, False)
        return
    assert_refused(response)
    assert snapshot(database) == before


@FUZZ
@given(where=st.sampled_from(["label", "field", "data", "stamp", "delete"]), text=st.sampled_from(SQLISH) | st.text(),
       number=st.integers(min_value=2**63) | st.integers(max_value=-(2**63) - 1))
def test_hostile_records_are_refused_or_reported_per_key(server, where: str, text: str, number: int) -> None:
    # the model's own label, or one of its fields (or a field every record may carry), makes a valid record
    assume(not (where == "label" and text == LABEL) and not (where == "field" and text in {*COLUMNS, *META_FIELDS}))
    url, database = server
    body = valid_manifest()
    payload = body["payloads"][0]
    record = payload["records"]["k1"]
    if where == "label":
        payload["model_label"] = text or "x"
    elif where == "field":
        record["data"][text] = 1
        record["timestamps"][text] = CLOCK.now()
    elif where == "data":
        record["data"]["title"] = number
    elif where == "stamp":
        record["timestamps"]["title"] = number  # past 64 bits either way, or negative
    else:
        payload["deletes"] = {"k1": number}
    body["checksum"] = checksum_of(body)
    before = snapshot(database)
    response = send(url, json.dumps(body).encode())
    if response.status_code == 200:
        answer = response.json()
        assert answer["ok"] is False and [e["key"] for e in answer["errors"]] == ["k1"], answer
    else:
        assert_refused(response)
    assert snapshot(database) == before


HAND_WRITTEN = {
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "deep object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "huge number": json.dumps({**valid_manifest(), "checkpoint": 10**400}).encode(),
    "nan": b'{"node_id": "x", "checkpoint": NaN}',
    "gzip bomb": gzip.compress(b"[" + b" " * 20_000_000 + b"]"),
    "oversized": b'{"pad": "' + b"x" * 300_000 + b'"}',
    "empty": b"",
    "bad checksum": json.dumps({**valid_manifest(), "checksum": "f" * 64}).encode(),
    "no checksum": json.dumps({k: v for k, v in valid_manifest().items() if k != "checksum"}).encode(),
}


@pytest.mark.parametrize("body", HAND_WRITTEN.values(), ids=HAND_WRITTEN.keys())
def test_hand_written_hostile_bodies(server, body: bytes) -> None:
    url, database = server
    before = snapshot(database)
    assert_refused(send(url, body, gzipped=body[:2] == b"\x1f\x8b"))
    assert snapshot(database) == before


def test_sql_looking_keys_are_stored_as_plain_values(server, server_backend: str) -> None:
    url, database = server
    stamp = CLOCK.now()
    keys = [text for text in SQLISH if text]
    records = {key: SyncRecord(key, {"id": key, "title": key}, {"id": stamp, "title": stamp}) for key in keys}
    manifest = SyncManifest("device-x", 0, node_time=int(time.time()), payloads=[ModelPayload(LABEL, records)]).seal()
    answer = send(url, json.dumps(manifest.to_dict()).encode()).json()
    if server_backend == "postgres":  # its text cannot hold NUL: that key alone is refused, saying so
        assert [(error["key"], "NUL" in error["message"]) for error in answer["errors"]] == [("x\x00y", True)]
        keys.remove("x\x00y")
    else:
        assert answer["ok"] is True
    stored = dict(server_query(database, "SELECT id, title FROM items"))
    assert {key: stored[key] for key in keys} == {key: key for key in keys}
    assert SCHEMA  # the items table survived every attempt above

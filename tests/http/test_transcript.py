"""Replay the recorded session of the existing server (wire_transcript.json) against server_stub.

The transcript's ``node_time`` values are from the day it was recorded, so
each request's ``node_time`` is moved by the same offset to today and the
request re-sealed (a request recorded with a wrong checksum keeps it): the
"clock one hour behind" request is still an hour behind and still refused.
"""

from __future__ import annotations

import ast
import gzip
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from client_sdk import SyncAbortedError, SyncManifest
from client_sdk.protocol.wire import META_FIELDS, checksum_of
from client_sdk.transport import HttpTransport
from server_stub import create_app
from tests.serverdb import Database

from ..conftest import load_vectors
from .conftest import serve, todo_config

TRANSCRIPT = load_vectors("wire_transcript.json")
RECORDED_AT = TRANSCRIPT[0]["request"]["node_time"]


def replayable(request: Any, now: int) -> bytes | dict[str, Any]:
    """The request as it can be sent today: raw bodies as recorded, manifests moved to ``now``."""
    if isinstance(request, str):
        return ast.literal_eval(request.removeprefix("<raw body: ").removesuffix(">"))
    moved = dict(request, node_time=request["node_time"] - RECORDED_AT + now)
    if checksum_of(request) == request["checksum"]:
        moved["checksum"] = checksum_of(moved)
    return moved


def shape(value: Any) -> Any:
    """The structure of an answer: key names and value types, with records reduced to their fields."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


def record_shapes(answer: dict[str, Any]) -> set[tuple[str, frozenset[str], frozenset[str]]]:
    """(label, data fields without server meta fields, stamped fields) of every record in an answer."""
    return {
        (payload["model_label"], frozenset(set(record["data"]) - META_FIELDS), frozenset(record["timestamps"]))
        for payload in answer["payloads"]
        for record in payload["records"].values()
    }


@pytest.fixture(scope="module")
def replayed(module_server_database: Callable[[], Database]) -> Iterator[list[httpx.Response]]:
    """Every transcript request sent in order to a fresh server_stub, over plain httpx."""
    now = int(time.time())
    with serve(create_app(todo_config(module_server_database()))) as base:
        answers = []
        for entry in TRANSCRIPT:
            body = replayable(entry["request"], now)
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            if entry["request_headers"].get("Content-Encoding") == "gzip":
                content = gzip.compress(content)
            answers.append(httpx.post(base + "/sync/", content=content, headers=entry["request_headers"]))
        yield answers


@pytest.mark.parametrize("index", range(len(TRANSCRIPT)), ids=[entry["note"][:48] for entry in TRANSCRIPT])
def test_each_request_gets_the_recorded_status_and_shape(replayed: list[httpx.Response], index: int) -> None:
    entry, response = TRANSCRIPT[index], replayed[index]
    assert response.status_code == entry["status"]
    answer = response.json()
    if entry["status"] != 200:
        # the recorded body exactly; a 409 may explain itself in two extra keys the existing clients ignore
        assert {key: answer[key] for key in entry["response"]} == entry["response"]
        assert set(answer) - set(entry["response"]) <= {"reason", "detail"}
        return
    recorded = entry["response"]
    assert set(answer) == set(recorded) | {"skipped"} and isinstance(answer["skipped"], int)
    assert {key: shape(answer[key]) for key in ("ok", "errors", "has_more", "after_keys", "node_id")} == {
        key: shape(recorded[key]) for key in ("ok", "errors", "has_more", "after_keys", "node_id")}
    for payload in answer["payloads"]:
        assert set(payload) == {"model_label", "records", "deletes"}
        for record in payload["records"].values():
            assert set(record) == {"data", "timestamps"} and set(record["data"]) == set(record["timestamps"])
    assert record_shapes(recorded) <= record_shapes(answer)
    SyncManifest.from_dict(answer).verify_checksum()


def test_a_first_sync_pulls_what_the_other_device_pushed(replayed: list[httpx.Response]) -> None:
    """Contents, not only shapes, where the recording's stamps allow it: device-b's first pull gets both rows.

    (Later answers depend on how the recorded stamps, a day old, compare with
    this server's fresh clock, so they are not compared.)
    """
    first_pull = replayed[3].json()
    assert {key for payload in first_pull["payloads"] for key in payload["records"]} == {
        "00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"}


def test_the_sdk_turns_each_refusal_into_a_sync_aborted_error(server_database: Database) -> None:
    now = int(time.time())
    with serve(create_app(todo_config(server_database))) as base, \
            HttpTransport(base + "/sync/", retry_delay=0) as http:
        for entry in TRANSCRIPT:
            request = replayable(entry["request"], now)
            if isinstance(request, bytes):
                continue  # a raw body the SDK can never send: covered by the HTTP-level replay
            manifest = SyncManifest.from_dict(request)
            if entry["status"] == 200:
                assert http.exchange(manifest).node_id == "server"
                continue
            with pytest.raises(SyncAbortedError) as caught:
                http.exchange(manifest)
            assert (caught.value.status, caught.value.server_error) == (entry["status"], entry["response"]["error"])

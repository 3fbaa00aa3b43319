"""server_stub over real HTTP: every status and error body of PROTOCOL.md section 5."""

from __future__ import annotations

import gzip
import json
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from client_sdk import HybridLogicalClock, ModelPayload, SyncManifest, SyncRecord
from client_sdk.protocol.hlc import system_ms
from server_stub import create_app
from tests.serverdb import Database, server_snapshot, server_storage

from .conftest import LIST, TASK, ServerFactory, serve, todo_config

JSON_GZIP = {"Content-Type": "application/json", "Content-Encoding": "gzip", "Accept-Encoding": "gzip"}
CLOCK = HybridLogicalClock()


def manifest(
    node_id: str = "device-a", payloads: list[ModelPayload] | None = None, checkpoint: int = 0, **fields: object
) -> dict:
    body = SyncManifest(node_id, checkpoint, node_time=int(time.time()), payloads=payloads or [], **fields).seal()  # type: ignore[arg-type]
    return body.to_dict()


def task_list(name: str = "Groceries", **extra: object) -> tuple[str, SyncRecord]:
    key = str(uuid.uuid4())
    data = {"id": key, "name": name, **extra}
    stamp = CLOCK.now()
    return key, SyncRecord(key, data, {field: stamp for field in data})


def post(url: str, body: dict | bytes, headers: dict[str, str] | None = None, *, compress: bool = True) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    if compress:
        content = gzip.compress(content)
    sent = dict(JSON_GZIP if compress else {"Content-Type": "application/json", "Accept-Encoding": "identity"})
    sent.update(headers or {})
    return httpx.post(url + "/sync/", content=content, headers=sent)


def refusal(response: httpx.Response) -> tuple[int, dict]:
    return response.status_code, response.json()


@pytest.fixture(scope="module")
def url(module_server_database: Callable[[], Database]) -> Iterator[str]:
    """One server for the tests that only look at answers; tests that inspect stored state start their own."""
    with serve(create_app(todo_config(module_server_database(), request_bytes_max=64 * 1024))) as base:
        yield base


def test_health_names_the_server(url: str) -> None:
    assert httpx.get(url + "/health").json() == {"ok": True, "node_id": "server"}


def test_a_round_answers_the_manifest_with_ok_errors_and_skipped(url: str) -> None:
    key, record = task_list()
    response = post(url, manifest(payloads=[ModelPayload(LIST, {key: record})]))
    assert response.status_code == 200 and response.headers["content-encoding"] == "gzip"
    body = response.json()
    assert body["ok"] is True and body["errors"] == [] and body["skipped"] == 0
    assert set(body) == {"node_id", "checkpoint", "node_time", "payloads", "after_keys", "has_more", "checksum",
                         "ok", "errors", "skipped"}
    SyncManifest.from_dict(body).verify_checksum()
    pulled = post(url, manifest("device-b")).json()
    assert pulled["payloads"][0]["records"][key]["data"] == record.data


def test_plain_requests_and_plain_responses_are_accepted(url: str) -> None:
    response = post(url, manifest(), compress=False)
    assert response.status_code == 200 and "content-encoding" not in response.headers
    assert response.json()["ok"] is True


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_not_a_post_is_405(url: str, method: str) -> None:
    response = httpx.request(method, url + "/sync/")
    assert refusal(response) == (405, {"ok": False, "error": "Method not allowed"})
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("content_type", ["text/plain", "", "application/x-www-form-urlencoded", "application/jsonx"])
def test_a_wrong_content_type_is_415(url: str, content_type: str) -> None:
    response = post(url, manifest(), {"Content-Type": content_type})
    assert refusal(response) == (415, {"ok": False, "error": "Content-Type must be application/json"})


def test_a_charset_parameter_is_fine_but_an_unknown_encoding_is_415(url: str) -> None:
    assert post(url, manifest(), {"Content-Type": "application/json; charset=utf-8"}).status_code == 200
    response = post(url, manifest(), {"Content-Encoding": "br"})
    assert refusal(response) == (415, {"ok": False, "error": "Content-Encoding must be gzip or identity"})


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "Invalid JSON in request body"),
        (b"\xff\xfe{}", "Invalid JSON in request body"),
        (b"[" * 5_000 + b"]" * 5_000, "Invalid JSON in request body"),
        (b"[1, 2]", "Request body must be a JSON object"),
        (b'"text"', "Request body must be a JSON object"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_400(url: str, body: bytes, error: str) -> None:
    assert refusal(post(url, body)) == (400, {"ok": False, "error": error})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"node_id": ""}, "node_id"),
        ({"checkpoint": -1}, "checkpoint"),
        ({"checkpoint": True}, "checkpoint"),
        ({"payloads": {}}, "payloads"),
        ({"payloads": [{"model_label": "", "records": {}, "deletes": {}}]}, "model_label"),
        ({"payloads": [{"model_label": "todo.Task", "records": {"k": {"data": [], "timestamps": {}}}}]}, "data"),
        ({"payloads": [{"model_label": "todo.Task", "deletes": {"k": "soon"}}]}, "deletes.k"),
        ({"has_more": "no"}, "has_more"),
    ],
)
def test_a_malformed_manifest_is_400_naming_the_field(url: str, change: dict, field: str) -> None:
    body = {**manifest(), **change}
    status, answer = refusal(post(url, body))
    assert status == 400 and answer["ok"] is False
    assert answer["error"].startswith("Invalid manifest: ") and field in answer["error"]


def test_broken_gzip_and_a_bad_content_length_are_400(url: str) -> None:
    truncated = gzip.compress(json.dumps(manifest()).encode())[:-8]
    assert refusal(post(url, truncated, compress=False, headers=JSON_GZIP)) == (
        400, {"ok": False, "error": "Invalid gzip in request body"})
    assert refusal(post(url, b"plain text", compress=False, headers=JSON_GZIP))[0] == 400
    # h11 itself refuses a non-numeric Content-Length before the app sees it: still a 400, never a 500.
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(b"POST /sync/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: two\r\n\r\n{}")
        assert raw.recv(100).startswith(b"HTTP/1.1 400 ")


def test_a_body_over_the_limit_is_413_by_header_by_stream_and_once_inflated(url: str) -> None:
    too_large = {"ok": False, "error": "Request body too large"}
    big = json.dumps({**manifest(), "padding": "x" * 70_000}).encode()
    assert refusal(post(url, big, compress=False, headers={"Content-Type": "application/json"})) == (413, too_large)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        yield big[:40_000]
        yield big[40_000:]

    streamed = httpx.post(url + "/sync/", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in streamed.request.headers
    assert refusal(streamed) == (413, too_large)
    bomb = gzip.compress(b" " * 10_000_000)
    assert len(bomb) < 64 * 1024
    assert refusal(post(url, bomb, compress=False, headers=JSON_GZIP)) == (413, too_large)


def test_a_wrong_checksum_and_clock_drift_are_409_with_reason_and_detail(url: str) -> None:
    def aborted(body: dict) -> tuple[int, bool, str, str, str]:
        status, answer = refusal(post(url, body))
        return status, answer["ok"], answer["error"], answer["reason"], answer["detail"]

    assert aborted({**manifest(), "checksum": "0" * 64})[:4] == (409, False, "Sync aborted", "checksum")
    assert aborted({**manifest(), "checksum": None})[:4] == (409, False, "Sync aborted", "checksum")
    behind = SyncManifest("device-a", 0, node_time=int(time.time()) - 3600).seal().to_dict()
    status, ok, error, reason, detail = aborted(behind)
    assert (status, ok, error, reason) == (409, False, "Sync aborted", "clock_drift")
    assert "our clock" in detail and "theirs" in detail


def test_refused_requests_never_change_the_database(todo_server: ServerFactory, server_database: Database) -> None:
    url = todo_server(request_bytes_max=64 * 1024)
    key, record = task_list()
    assert post(url, manifest(payloads=[ModelPayload(LIST, {key: record})])).status_code == 200
    before = server_snapshot(server_database)
    far_future = CLOCK.now() + (10**9 << 16)
    _, late = task_list()
    late.timestamps = {name: far_future for name in late.timestamps}
    bad_checksum = {**manifest(payloads=[ModelPayload(LIST, dict([task_list()]))]), "checksum": "0" * 64}
    drifting = SyncManifest("device-a", 0, node_time=int(time.time()) - 3600, payloads=[ModelPayload(LIST, {key: late})])
    invalid = {**manifest(payloads=[ModelPayload(LIST, dict([task_list()]))]), "has_more": "yes"}
    # NaN where the manifest wants an integer (in a record's data it is a per-key error: test_hostile_values.py)
    nan_checkpoint = json.dumps({**manifest(), "checkpoint": float("nan")}).encode()
    for body in (bad_checksum, drifting.seal().to_dict(), invalid, nan_checkpoint, b"not json", b"[]"):
        assert post(url, body).status_code in (400, 409)
    assert post(url, nan_checkpoint).json()["error"].startswith("Invalid manifest: checkpoint: ")
    assert post(url, manifest(), {"Content-Type": "text/plain"}).status_code == 415
    assert server_snapshot(server_database) == before


@pytest.mark.sqlite_only("another connection holds the SQLite file's write lock")
def test_a_round_waits_out_another_process_lock_while_the_server_keeps_answering(
    todo_server: ServerFactory, tmp_path: Path
) -> None:
    """A small round may run on the event loop, but one that finds the file locked waits on the database
    thread: /health still answers, and the round applies (once) when the lock is gone, not a 409."""
    url = todo_server()
    key, record = task_list()
    holder = sqlite3.connect(tmp_path / "server.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(post, url, manifest(payloads=[ModelPayload(LIST, {key: record})]))
            time.sleep(0.3)  # time for the round to reach the lock (if it has not, the test proves less, never fails)
            assert httpx.get(url + "/health", timeout=10).status_code == 200
            assert not waiting.done()
            holder.execute("ROLLBACK")
            answer = waiting.result(timeout=60)
    finally:
        holder.close()
    assert (answer.status_code, answer.json()["ok"], answer.json()["skipped"]) == (200, True, 0)
    stored = post(url, manifest(node_id="device-b")).json()
    assert [list(payload["records"]) for payload in stored["payloads"] if payload["model_label"] == LIST] == [[key]]


def test_an_unstorable_value_is_a_per_key_error_and_the_rest_applies(url: str) -> None:
    good_key, good = task_list()
    bad_key, bad = task_list()
    bad.data["name"] = 2**70  # valid JSON, but no SQLite column holds it
    answer = post(url, manifest(payloads=[ModelPayload(LIST, {good_key: good, bad_key: bad})])).json()
    assert answer["ok"] is False
    assert [error["key"] for error in answer["errors"]] == [bad_key]
    assert "64-bit" in answer["errors"][0]["message"]
    fresh = post(url, manifest()).json()
    stored = {key for payload in fresh["payloads"] for key in payload["records"]}
    assert good_key in stored and bad_key not in stored


def test_old_tombstones_are_purged_when_a_retention_is_configured(server_database: Database) -> None:
    config = todo_config(server_database, tombstone_retention_days=30)
    year_ago, yesterday = ((system_ms() - days * 86_400_000) << 16 for days in (365, 1))
    with server_storage(config) as storage:
        storage.delete_many(LIST, {"old": year_ago, "recent": yesterday}, guard=False)
    with serve(create_app(config)), server_storage(config) as storage:
        assert storage.get_deletes_since(LIST, 0) == {"recent": yesterday}


def test_unknown_labels_and_fields_are_reported_per_key_and_not_applied(todo_server: ServerFactory) -> None:
    url = todo_server()
    good_key, good = task_list()
    odd_key, odd = task_list(colour="red")
    sneaky_key, sneaky = task_list(**{'name" = 1; DROP TABLE Task; --': "x"})
    ghost_key, ghost = task_list()
    ghost.timestamps = {}
    elsewhere_key, elsewhere = task_list()
    payloads = [
        ModelPayload(LIST, {good_key: good, odd_key: odd, sneaky_key: sneaky, ghost_key: ghost}),
        ModelPayload("shop.Order", {elsewhere_key: elsewhere}, {"gone": 5}),
    ]
    body = post(url, manifest(payloads=payloads)).json()
    reported = {error["key"]: error for error in body["errors"]}
    assert set(reported) == {odd_key, sneaky_key, ghost_key, elsewhere_key, "gone"}
    assert "colour" in reported[odd_key]["message"] and reported[elsewhere_key]["model_label"] == "shop.Order"
    assert body["ok"] is False
    pulled = post(url, manifest("device-b")).json()
    stored = {key for payload in pulled["payloads"] for key in payload["records"]}
    assert stored == {good_key}
    assert post(url, manifest("device-c", payloads=[ModelPayload(TASK, {})])).status_code == 200


def test_gzip_is_only_sent_to_clients_that_accept_it(url: str) -> None:
    for accept, gzipped in (("gzip", True), ("deflate, gzip;q=1.0", True), ("gzip;q=0", False), ("identity", False)):
        response = post(url, manifest(), {"Accept-Encoding": accept})
        assert (response.headers.get("content-encoding") == "gzip") is gzipped, accept
        assert response.json()["ok"] is True


TOKENS = {"token-a": frozenset({"device-a"}), "token-ab": frozenset({"device-a", "device-b"})}


@pytest.fixture(scope="module")
def auth_url(module_server_database: Callable[[], Database]) -> Iterator[str]:
    with serve(create_app(todo_config(module_server_database(), tokens=TOKENS))) as base:
        yield base


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer wrong", "Basic token-a", "token-a", "Bearer token-a-x"])
def test_missing_or_invalid_credentials_are_401(auth_url: str, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    assert refusal(post(auth_url, manifest(), headers)) == (401, {"ok": False, "error": "Missing or invalid bearer token"})


def test_a_token_syncs_only_as_its_own_node_ids(auth_url: str) -> None:
    assert post(auth_url, manifest("device-a"), {"Authorization": "Bearer token-a"}).status_code == 200
    assert post(auth_url, manifest("device-b"), {"Authorization": "bearer token-ab"}).status_code == 200
    response = post(auth_url, manifest("device-b"), {"Authorization": "Bearer token-a"})
    assert refusal(response) == (403, {"ok": False, "error": "This token may not sync as this node_id"})


def test_health_needs_no_token(auth_url: str) -> None:
    assert httpx.get(auth_url + "/health").status_code == 200

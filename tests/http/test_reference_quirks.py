"""Every answer the existing server really gave (``vectors/reference_quirks.json``) goes through the
SDK's decoding and apply paths, and the device ends with the rows it describes (issue #15).

What the existing server sends that the SDK must take: a foreign key's stamp under the model's
field name (``"list"`` for the column ``list_id``), ``"list_id": 0`` after its own merge, the
meta fields ``sync_field_timestamps`` and ``sync_field_last_modified`` inside ``data``, and a key
in both ``records`` and ``deletes`` of one payload (the tombstone wins when it is at least as new
as the record's newest field stamp; the server's receive time does not count).
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from client_sdk import DatabaseEngine, HttpTransport, SqliteSyncStorage, SyncManifest
from client_sdk.protocol.wire import META_FIELDS
from client_sdk.transport.binding import read_response_body
from tests.conftest import load_vectors

from .conftest import TASK, TODO_MODELS, TODO_SCHEMA, ServerFactory

EXCHANGES = load_vectors("reference_quirks.json")


class Replay:
    """Answers each device's next round with the recorded body, decoded as the HTTP transport decodes
    it, and every later round of that sync with nothing more."""

    def __init__(self) -> None:
        self.body: bytes | None = None
        self.checkpoint = 0

    def exchange(self, manifest: SyncManifest) -> SyncManifest:
        if self.body is not None:
            answer = read_response_body(self.body)
            self.body = None
            self.checkpoint = answer.checkpoint
            return answer
        return SyncManifest("server", self.checkpoint).seal()


def device(folder: Path, name: str) -> DatabaseEngine:
    path = folder / f"{name}.db"
    with closing(sqlite3.connect(path)) as connection:
        connection.executescript(TODO_SCHEMA)
    storage = SqliteSyncStorage(path, TODO_MODELS, node_id=name)
    return DatabaseEngine(storage, storage.dependency_graph(), storage.clock, name, transaction=storage.transaction,
                          transport=Replay(), clock_drift_max=None)  # recorded answers carry their old wall clock


def expected_rows(payload: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, int]] | None]:
    """key -> (the row's values, its stamps by column) the answer's payload describes, None: deleted."""
    rows: dict[str, tuple[dict[str, Any], dict[str, int]] | None] = dict.fromkeys(payload["deletes"])
    for key, record in payload["records"].items():
        stamps = dict(record["timestamps"])
        if key in payload["deletes"] and payload["deletes"][key] >= max(stamps.values(), default=0):
            continue  # the tombstone is at least as new as every field stamp: it wins
        if "list" in stamps:  # the existing clients' name for list_id's stamp
            stamps["list_id"] = stamps.pop("list")
        rows[key] = ({name: value for name, value in record["data"].items() if name not in META_FIELDS}, stamps)
    return rows


SCENARIOS = sorted({exchange["note"].split(":")[0] for exchange in EXCHANGES})


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_answer_of_the_existing_server_applies_as_it_describes(tmp_path: Path, scenario: str) -> None:
    """Each node of a recorded scenario is an SDK device that receives, in order, the answers that
    node received; after each, the rows and stamps it holds are the ones the answer describes."""
    devices: dict[str, DatabaseEngine] = {}
    answered = 0
    for index, exchange in enumerate(EXCHANGES):
        if exchange["note"].split(":")[0] != scenario or not exchange["response"].get("payloads"):
            continue
        name = exchange["request"]["node_id"]
        engine = devices.get(name) or devices.setdefault(name, device(tmp_path, name))
        engine.transport.body = json.dumps(exchange["response"]).encode()  # type: ignore[union-attr]
        result = engine.sync()
        assert result.ok, (index, result.errors)
        answered += 1
        for payload in exchange["response"]["payloads"]:
            label = payload["model_label"]
            table = engine.storage.table_for(label)
            with closing(sqlite3.connect(tmp_path / f"{name}.db")) as connection:
                connection.row_factory = sqlite3.Row
                held = {row["id"]: dict(row) for row in connection.execute(f'SELECT * FROM "{table}"')}
            stored = engine.storage.get_records(label, held)
            for key, described in expected_rows(payload).items():
                if described is None:
                    assert key not in held, (index, label, key)
                    continue
                values, stamps = described
                assert {name: held[key][name] for name in values} == {
                    name: int(value) if isinstance(value, bool) else value for name, value in values.items()
                }, (index, label, key)
                assert {n: t for n, t in stored[key].timestamps.items() if t} == {n: t for n, t in stamps.items() if t}
    assert answered


def test_a_key_in_both_maps_is_settled_by_stamps_and_counted() -> None:
    """Exchange 16: the task's newest field stamp is older than the tombstone beside it."""
    answer = EXCHANGES[16]["response"]
    tasks = next(payload for payload in answer["payloads"] if payload["model_label"] == TASK)
    (key,) = tasks["deletes"]
    assert key in tasks["records"]
    assert tasks["deletes"][key] > max(tasks["records"][key]["timestamps"].values())


def test_the_key_in_both_maps_is_deleted_on_a_fresh_device(tmp_path: Path) -> None:
    engine = device(tmp_path, "fresh")
    engine.transport.body = json.dumps(EXCHANGES[16]["response"]).encode()  # type: ignore[union-attr]
    result = engine.sync()
    (key,) = next(p for p in EXCHANGES[16]["response"]["payloads"] if p["model_label"] == TASK)["deletes"]
    assert engine.storage.get_records(TASK, [key]) == {}
    assert key in result.skipped[TASK]  # the record that lost to the tombstone beside it


def test_our_server_stores_the_existing_clients_dialect_under_its_columns(todo_server: ServerFactory, tmp_path: Path) -> None:
    """Exchange 0's request, as the existing client sent it (stamps under ``list``, meta fields in
    ``data``), reaches server_stub: stored with the stamps under ``list_id``, and a fresh SDK device
    then pulls the rows with every stamp. Our server never answers with a key in both maps."""
    base = todo_server(clock_drift_max=None)  # the recorded request carries its old wall clock
    request = EXCHANGES[0]["request"]
    answer = httpx.post(base + "/sync/", content=json.dumps(request).encode(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 200 and answer.json()["errors"] == []
    fresh = device(tmp_path, "fresh")
    fresh.transport = HttpTransport(base + "/sync/", retries=0)
    fresh.sync()
    sent = {payload["model_label"]: payload["records"] for payload in request["payloads"]}
    for label, records in sent.items():
        stored = fresh.storage.get_records(label, records)
        assert set(stored) == set(records)
        for key, record in records.items():
            stamps = {("list_id" if name == "list" else name): stamp for name, stamp in record["timestamps"].items()}
            assert stored[key].timestamps == stamps
            assert stored[key].data == {n: v for n, v in record["data"].items() if n not in META_FIELDS}
    fresh.transport.close()


def test_our_server_still_refuses_a_request_with_a_key_in_both_maps(todo_server: ServerFactory) -> None:
    """Answers may carry that shape (the existing server's); a request may not, as the seed's validation says."""
    base = todo_server(clock_drift_max=None)
    request = {"node_id": "odd", "checkpoint": 0, "node_time": 0, "payloads": [
        {"model_label": TASK, "records": {"k": {"data": {"id": "k", "title": "t"}, "timestamps": {"title": 5}}},
         "deletes": {"k": 6}}]}
    sealed = SyncManifest.from_dict({**request, "checksum": ""}, overlapping=True).seal().to_dict()
    answer = httpx.post(base + "/sync/", content=json.dumps(sealed).encode(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert "no key both in records and deletes" in answer.json()["error"]

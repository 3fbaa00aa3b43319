"""JSON values survive a trip through SQLite columns of every declared type."""

from __future__ import annotations

import base64
import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.errors import RecordFieldError
from client_sdk.protocol.wire import ModelPayload, SyncManifest, SyncRecord
from client_sdk.sqlite import ColumnKind, SqliteSyncStorage
from client_sdk.sqlite.values import ValueMappingError, kind_for, to_json, to_sqlite

int64 = st.integers(-(2**63), 2**63 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | int64 | finite | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
COLUMNS: dict[str, tuple[str, st.SearchStrategy[Any]]] = {
    "t": ("TEXT", st.none() | st.text()),
    "i": ("INTEGER", st.none() | int64),
    "r": ("REAL", st.none() | finite),
    "n": ("NUMERIC", st.none() | int64),
    "b": ("BOOLEAN", st.none() | st.booleans()),
    "bl": ("BLOB", st.none() | st.binary().map(lambda raw: base64.b64encode(raw).decode("ascii"))),
    "j": ("JSON", json_values),
    "u": ("", st.none() | int64 | finite | st.text()),
}


@pytest.mark.parametrize(
    ("declared", "kind"),
    [("BOOLEAN", ColumnKind.BOOLEAN), ("bool", ColumnKind.BOOLEAN), ("JSON", ColumnKind.JSON), ("BLOB", ColumnKind.BLOB),
     ("TEXT", ColumnKind.PLAIN), ("VARCHAR(20)", ColumnKind.PLAIN), ("", ColumnKind.PLAIN), ("INTEGER", ColumnKind.PLAIN)],
)
def test_kind_for_declared_types(declared: str, kind: ColumnKind) -> None:
    assert kind_for(declared) is kind


def test_mapping_details() -> None:
    assert to_sqlite(ColumnKind.BOOLEAN, True) == 1 and to_json(ColumnKind.BOOLEAN, 0) is False
    assert to_json(ColumnKind.BOOLEAN, 7) == 7
    assert to_sqlite(ColumnKind.JSON, {"a": [1]}) == '{"a":[1]}' and to_sqlite(ColumnKind.JSON, "5") == '"5"'
    assert to_json(ColumnKind.JSON, "not json") == "not json"
    assert to_sqlite(ColumnKind.BLOB, "AQI=") == b"\x01\x02" and to_json(ColumnKind.PLAIN, b"\x01\x02") == "AQI="
    assert to_sqlite(ColumnKind.PLAIN, [1, 2]) == "[1,2]"
    with pytest.raises(ValueMappingError):
        to_sqlite(ColumnKind.BLOB, "not base64!")
    with pytest.raises(ValueMappingError):
        to_sqlite(ColumnKind.PLAIN, 2**64)


def things(folder: Path, role: str) -> SqliteSyncStorage:
    """A storage of one table with a column of every declared type."""
    columns = ", ".join(f"{name} {declared}" for name, (declared, _) in COLUMNS.items())
    with sqlite3.connect(folder / "things.db") as setup:
        setup.execute(f"CREATE TABLE things (id TEXT PRIMARY KEY, {columns})")
    return SqliteSyncStorage(folder / "things.db", {"things": "app.Thing"}, role=role)


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> SqliteSyncStorage:
    return things(tmp_path_factory.mktemp("values"), "client")


def same(a: Any, b: Any) -> bool:
    """JSON equality, where 1 == 1.0 (SQLite may store a whole REAL as an integer in NUMERIC columns)."""
    if isinstance(a, float) or isinstance(b, float):
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
        return numbers and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.fixed_dictionaries({name: strategy for name, (_, strategy) in COLUMNS.items()}), min_size=1, max_size=3))
def test_values_round_trip_through_real_columns(storage: SqliteSyncStorage, rows: list[dict[str, Any]]) -> None:
    written = {f"k{index}": {"id": f"k{index}", **row} for index, row in enumerate(rows)}
    records = {key: SyncRecord(key, data, {name: 1 for name in data}) for key, data in written.items()}
    storage.upsert_many("app.Thing", records, guard=False)
    stored = storage.get_records("app.Thing", list(written))
    for key, data in written.items():  # a page is read column by column: each row keeps its own values
        assert all(same(stored[key].data[name], value) for name, value in data.items()), (stored[key].data, data)


def test_a_value_the_column_cannot_hold_is_a_record_error(storage: SqliteSyncStorage) -> None:
    with pytest.raises(RecordFieldError, match="base64"):
        storage.upsert_many("app.Thing", {"x": SyncRecord("x", {"id": "x", "bl": "%%%"}, {"id": 1, "bl": 1})})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> SqliteSyncStorage:
    """A server's storage of the same table, for the pages it serves."""
    return things(tmp_path_factory.mktemp("served"), "server")


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.fixed_dictionaries({name: strategy for name, (_, strategy) in COLUMNS.items()}), min_size=1, max_size=3),
       stamp=st.integers(1, 2**60))
def test_a_served_page_is_sealed_exactly_as_its_records_encoded_one_by_one(
    server: SqliteSyncStorage, rows: list[dict[str, Any]], stamp: int
) -> None:
    written = {f"s{index}": {"id": f"s{index}", **row} for index, row in enumerate(rows)}
    server.upsert_many("app.Thing", {key: SyncRecord(key, data, {name: stamp for name in data}) for key, data in written.items()},
                       guard=False)
    served = dict(server.get_changed_since("app.Thing", 0))
    sealed = SyncManifest("server", 1, node_time=2, payloads=[ModelPayload("app.Thing", served, {"gone": 3})]).seal()
    texts = {key: record.canonical_text for key, record in served.items()}
    assert None not in texts.values()  # every field has a stamp: the page took the fast path
    plain = {key: SyncRecord(key, dict(record.data), dict(record.timestamps), record.received_at)
             for key, record in served.items()}
    for key, record in plain.items():  # the page's texts are what json.dumps makes of each record
        assert texts[key] == json.dumps(record.to_dict(), sort_keys=True)
    unsealed = SyncManifest("server", 1, node_time=2, payloads=[ModelPayload("app.Thing", plain, {"gone": 3})])
    assert sealed.to_json() == unsealed.seal().to_json()


def test_a_served_record_whose_dicts_were_read_is_encoded_afresh(server: SqliteSyncStorage) -> None:
    data = {"id": "m", **{name: None for name in COLUMNS}, "t": "before"}
    server.upsert_many("app.Thing", {"m": SyncRecord("m", data, {name: 5 for name in data})}, guard=False)
    record = dict(server.get_changed_since("app.Thing", 0))["m"]
    assert record.canonical_text is not None and '"before"' in record.canonical_text
    record.data["t"] = "changed after reading"  # whoever reads the dicts may change them: the text is dropped
    assert record.canonical_text is None
    sealed = SyncManifest("server", 1, node_time=2, payloads=[ModelPayload("app.Thing", {"m": record})]).seal()
    assert '"changed after reading"' in sealed.to_json()
    assert dataclasses.replace(record, received_at=9).data == record.data  # it copies like any SyncRecord

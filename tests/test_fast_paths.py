"""Every whole-page fast path agrees with the record-by-record path it shortcuts: it gives the same
answer, or it declines and leaves the page to the exact path. Never a different answer."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk import ModelPayload, SyncRecord
from client_sdk.engine.checks import all_storable, record_problems
from client_sdk.errors import SyncError
from client_sdk.protocol.wire import _plain_records
from client_sdk.sqlite import SqliteSyncStorage
from client_sdk.sqlite.kept import split_unknown
from client_sdk.sqlite.mapping import json_column, value_rows
from client_sdk.sqlite.values import ColumnKind, to_json

LABEL = "todo.Task"
FIELDS = ("id", "title", "done", "priority", "notes")
scalars = st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats(allow_nan=False) | st.text(max_size=4)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2), max_leaves=4
)
field_names = st.sampled_from([*FIELDS, "unknown", "sync_field_timestamps"])
stamps = st.one_of(st.integers(0, 2**64), st.integers(-3, 3), st.booleans(), st.text(max_size=2), st.none())


@st.composite
def raw_records(draw: st.DrawFn) -> dict[Any, Any]:
    """What json.loads may make of a payload's records: half the time a clean page (every record
    complete and valid, the case the fast paths are for), otherwise anything, mostly near-valid."""
    keys = draw(st.lists(st.sampled_from(["a", "b", "c", ""]), unique=True, max_size=4))
    if draw(st.booleans()):
        clean = json_values if draw(st.integers(0, 3)) == 0 else (  # now and then a value to convert or refuse
            st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=4))
        return {
            key: {"data": {"id": key} | {name: draw(clean) for name in FIELDS[1:]},
                  "timestamps": {name: draw(st.integers(0, 2**40)) for name in FIELDS}}
            for key in keys if key
        }
    raw: dict[Any, Any] = {}
    for key in keys:
        if draw(st.integers(0, 9)) == 0:
            raw[key] = draw(json_values)
            continue
        names = set(FIELDS) if draw(st.booleans()) else draw(st.sets(field_names, max_size=4))
        record: dict[str, Any] = {
            "data": {name: draw(json_values if draw(st.integers(0, 5)) == 0 else scalars) for name in names}
            | ({"id": key} if draw(st.booleans()) else {}),
            "timestamps": {name: draw(stamps if draw(st.integers(0, 5)) == 0 else st.integers(0, 2**40)) for name in names},
        }
        if draw(st.integers(0, 7)) == 0:
            record["received_at"] = draw(stamps)
        if draw(st.integers(0, 9)) == 0:
            record[draw(st.sampled_from(["data", "timestamps"]))] = draw(json_values)
        raw[key] = record
    return raw


def exact_records(raw: dict[Any, Any]) -> dict[str, SyncRecord] | type[SyncError]:
    try:
        return {key: SyncRecord.from_dict(key, record, label=LABEL) for key, record in raw.items()}
    except SyncError:
        return SyncError


@settings(max_examples=400, deadline=None)
@given(raw_records())
def test_decoding_a_payload_agrees_with_decoding_record_by_record(raw: dict[Any, Any]) -> None:
    fast = _plain_records(raw)
    if fast is not None:
        assert fast == exact_records(raw)


def payloads(raw: dict[Any, Any]) -> dict[str, SyncRecord] | None:
    records = exact_records(raw)
    return None if records is SyncError else records  # type: ignore[return-value]


@settings(max_examples=400, deadline=None)
@given(raw_records(), st.booleans())
def test_the_engine_finds_a_payload_storable_only_if_every_record_is(raw: dict[Any, Any], known: bool) -> None:
    records = payloads(raw)
    fields = frozenset(FIELDS) if known else None
    if records and all_storable(records, "id", fields):
        assert record_problems(ModelPayload(LABEL, records), "id", fields) == {}


TASKS = "CREATE TABLE {} (id TEXT PRIMARY KEY, title TEXT, done BOOLEAN, priority INTEGER, notes TEXT)"


def rows_of(connection: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    return connection.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


@settings(max_examples=300, deadline=None)
@given(raw=raw_records())
def test_storing_a_page_writes_what_binding_it_record_by_record_writes(raw: dict[Any, Any]) -> None:
    """The page goes to SQLite as decoded when it can (values the binding refuses send it down the
    exact path): the table must end up as if every record's converted values had been bound (the
    fields the table has no column for are kept beside it)."""
    records = payloads(raw)
    if not records:
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "app.db"
        with sqlite3.connect(path) as setup:
            setup.execute(TASKS.format("tasks"))
            setup.execute(TASKS.format("twin"))
        storage = SqliteSyncStorage(path, {"tasks": LABEL})
        try:
            try:
                model = storage._model(LABEL)
                exact = value_rows(model, split_unknown(model, records)[0])  # a client keeps the fields it has no column for
            except SyncError:
                with pytest.raises(SyncError):
                    storage.upsert_many(LABEL, records)
                assert rows_of(storage.connection, "tasks") == []
                return
            storage.upsert_many(LABEL, records)
            for names, rows in exact.items():
                marks = ", ".join("?" for _ in names)
                storage.connection.executemany(f"INSERT INTO twin ({', '.join(names)}) VALUES ({marks})", rows)
            assert rows_of(storage.connection, "tasks") == rows_of(storage.connection, "twin")
        finally:
            storage.close()


def test_an_adapter_the_app_registered_does_not_change_what_a_page_stores(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "app.db") as setup:
        setup.execute(TASKS.format("tasks"))
    storage = SqliteSyncStorage(tmp_path / "app.db", {"tasks": LABEL})
    data = {"id": "a", "title": ["x", "y"], "done": True, "priority": 1, "notes": None}
    record = SyncRecord("a", data, dict.fromkeys(FIELDS, 5))
    sqlite3.register_adapter(list, repr)
    try:
        storage.upsert_many(LABEL, {"a": record})
    finally:
        del sqlite3.adapters[(list, sqlite3.PrepareProtocol)]
    assert rows_of(storage.connection, "tasks") == [("a", '["x","y"]', 1, 1, None)]
    storage.close()


@given(values=st.lists(st.none() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=2), max_size=6))
def test_reading_a_boolean_column_agrees_with_reading_value_by_value(values: list[Any]) -> None:
    column = tuple(values)
    assert json_column(ColumnKind.BOOLEAN, column) == tuple(to_json(ColumnKind.BOOLEAN, value) for value in column)
    assert list(map(type, json_column(ColumnKind.BOOLEAN, column))) == [type(to_json(ColumnKind.BOOLEAN, v)) for v in column]

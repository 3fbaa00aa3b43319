"""Every whole-page fast path agrees with the record-by-record path it shortcuts: it gives the same
answer, or it declines and leaves the page to the exact path. Never a different answer."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client_sdk import ModelPayload, SyncRecord
from client_sdk.engine.engine import _all_storable, _record_problems
from client_sdk.errors import SyncError
from client_sdk.protocol.wire import _plain_records
from client_sdk.sqlite import SqliteSyncStorage
from client_sdk.sqlite.storage import _json_column, _plain_rows, _value_rows
from client_sdk.sqlite.values import ColumnKind, to_json

LABEL = "todo.Task"
FIELDS = ("id", "title", "done", "priority", "notes")
scalars = st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats(allow_nan=False) | st.text(max_size=4)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
                           max_leaves=4)
field_names = st.sampled_from([*FIELDS, "unknown", "sync_field_timestamps"])
stamps = st.one_of(st.integers(0, 2**64), st.integers(-3, 3), st.booleans(), st.text(max_size=2), st.none())


@st.composite
def raw_records(draw: st.DrawFn) -> dict[Any, Any]:
    """What json.loads may make of a payload's records: half the time a clean page (every record
    complete and valid, the case the fast paths are for), otherwise anything, mostly near-valid."""
    keys = draw(st.lists(st.sampled_from(["a", "b", "c", ""]), unique=True, max_size=4))
    if draw(st.booleans()):
        clean = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=4)
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
            "data": {name: draw(scalars) for name in names} | ({"id": key} if draw(st.booleans()) else {}),
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
        return {key: SyncRecord.from_dict(record, key=key, label=LABEL) for key, record in raw.items()}
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
    if records and _all_storable(records, "id", fields):
        assert _record_problems(ModelPayload(LABEL, records), "id", fields) == {}


@pytest.fixture(scope="module")
def task_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path: Path = tmp_path_factory.mktemp("fast") / "app.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE tasks (id TEXT PRIMARY KEY, title TEXT, done BOOLEAN, priority INTEGER, notes TEXT)")
    storage = SqliteSyncStorage(path, {"tasks": LABEL})
    yield storage._model(LABEL)
    storage.close()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=raw_records())
def test_binding_a_page_agrees_with_binding_record_by_record(task_model: Any, raw: dict[Any, Any]) -> None:
    records = payloads(raw)
    if not records:
        return
    fast = _plain_rows(task_model, records)
    if fast is None:
        return
    try:
        exact = _value_rows(task_model, records)
    except SyncError:
        pytest.fail("the fast path bound a page the exact path refuses")
    assert exact == {FIELDS: [list(row) for row in fast]}


@given(values=st.lists(st.none() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=2), max_size=6))
def test_reading_a_boolean_column_agrees_with_reading_value_by_value(values: list[Any]) -> None:
    column = tuple(values)
    assert _json_column(ColumnKind.BOOLEAN, column) == tuple(to_json(ColumnKind.BOOLEAN, value) for value in column)
    assert list(map(type, _json_column(ColumnKind.BOOLEAN, column))) == [type(to_json(ColumnKind.BOOLEAN, v)) for v in column]

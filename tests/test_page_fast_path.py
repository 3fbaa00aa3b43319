"""A decoded page whose records all carry the same fields (a ``RecordPage``, with its columns) is
checked and stored exactly as the same records in a plain dict are (issue #16's initial pull).

Every check and write that takes the page's columns is run on the page and on a plain copy of it:
the answers, the engine's result and the whole database must be the same. Pages are made as a
server sends them (every record with the same fields, stamped), with now and then a value, a
stamp, a field or an identity that some check must refuse, and with local rows (pending or not)
under some of their keys.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk import DatabaseEngine, ModelPayload, SyncRecord
from client_sdk.engine.checks import all_storable, record_problems
from client_sdk.engine.results import DatabaseResult
from client_sdk.errors import SyncError
from client_sdk.protocol.page import RecordPage, page_columns
from client_sdk.protocol.wire import _plain_records
from client_sdk.sqlite import SqliteSyncStorage
from client_sdk.sqlite.kept import split_unknown
from client_sdk.sqlite.mapping import PlainRows, plain_rows, shadow_rows

LABEL = "todo.Task"
MODELS = {"lists": "todo.List", "tasks": LABEL}
SCHEMA = """
CREATE TABLE lists (id TEXT PRIMARY KEY);
CREATE TABLE tasks (id TEXT PRIMARY KEY, list_id TEXT REFERENCES lists (id), title TEXT, done BOOLEAN,
                    priority INTEGER, notes);
INSERT INTO lists (id) VALUES ('l1'), ('l2');
"""
FIELDS = ("id", "list_id", "title", "done", "priority", "notes")
KEYS = ("a", "b", "c", "d", "e")

fitting = {
    "list_id": st.sampled_from(["l1", "l2"]) | st.none(),
    "title": st.text(max_size=4),
    "done": st.booleans(),
    "priority": st.integers(-(2**63), 2**63 - 1),
    "notes": st.none() | st.integers(-5, 5) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=3),
}
odd_values = st.sampled_from([float("nan"), float("inf"), "\ud800", 2**64, -(2**70), 1.5, True, "l9", [1, "x"],
                              {"k": None}, {"k": float("nan")}, ["\udfff"]])
odd_stamps = st.sampled_from([-1, True, 2**64, 1.0, "5", None, 0])


@st.composite
def pages(draw: st.DrawFn) -> dict[str, Any]:
    """Decoded records as a server sends them, now and then with something wrong or unusual."""
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=5, unique=True))
    names = list(FIELDS)
    shape = draw(st.integers(0, 9))
    if shape == 0:
        names.remove(draw(st.sampled_from(FIELDS[1:])))  # a field the server does not send
    elif shape == 1:
        names.append(draw(st.sampled_from(["unknown", "sync_field_timestamps"])))  # one the table has no column for
    elif shape == 2:
        names.remove("id")  # no identity among the values: the key is the identity
    raw: dict[str, Any] = {}
    for key in keys:
        order = draw(st.permutations(names)) if draw(st.integers(0, 4)) == 0 else names
        data: dict[str, Any] = {}
        for name in order:
            if name == "id":
                data[name] = key if draw(st.integers(0, 19)) else "zz"
            elif draw(st.integers(0, 39)) == 0:
                data[name] = draw(odd_values)
            else:
                data[name] = draw(fitting.get(name, st.integers(0, 9)))
        stamps = {name: draw(odd_stamps) if draw(st.integers(0, 79)) == 0 else draw(st.integers(1, 2**40))
                  for name in order}
        raw[key] = {"data": data, "timestamps": stamps}
    return raw


local_rows = st.dictionaries(st.sampled_from(KEYS), st.tuples(st.text(max_size=3), st.booleans()), max_size=3)
"""Rows already here, by key: (title, whether still pending: else acknowledged as if synced)."""


def opened(path: Path) -> SqliteSyncStorage:
    """The device's storage on ``path``, on a connection that does not wait for the disk (hundreds of files)."""
    connection = sqlite3.connect(path, check_same_thread=False)
    connection.execute("PRAGMA synchronous = OFF")
    return SqliteSyncStorage(connection, MODELS, node_id="device")


def databases(folder: Path, local: dict[str, tuple[str, bool]]) -> tuple[SqliteSyncStorage, SqliteSyncStorage]:
    """Two copies of one device's file holding the ``local`` rows (copies: the same stamps in both)."""
    path = folder / "device.db"
    with closing(sqlite3.connect(path)) as connection:
        connection.executescript("PRAGMA synchronous = OFF;" + SCHEMA)
    storage = opened(path)
    with storage.transaction():
        storage.connection.executemany("INSERT INTO tasks (id, list_id, title) VALUES (?, 'l1', ?)",
                                       [(key, title) for key, (title, _pending) in local.items()])
    pending = storage.get_records(LABEL, list(local))
    storage.acknowledge(LABEL, {key: record.last_modified for key, record in pending.items() if not local[key][1]}, {})
    storage.connection.close()
    for name in ("fast", "slow"):
        shutil.copy(path, folder / f"{name}.db")
    return opened(folder / "fast.db"), opened(folder / "slow.db")


def contents(connection: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every table, every row (in a stable order)."""
    tables = [name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {table: sorted(connection.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr) for table in tables}


def applied(storage: SqliteSyncStorage, records: dict[str, SyncRecord]) -> tuple[Any, ...]:
    """What the engine makes of a payload of ``records``: its result, or the error it raises, and the database."""
    engine = DatabaseEngine(storage, storage.dependency_graph(), storage.clock, storage.node_id,
                            transaction=storage.transaction)
    result = DatabaseResult()
    try:
        with storage.transaction():
            engine._apply_payload(ModelPayload(LABEL, records), 1, result)
            violations = engine._reference_violations([ModelPayload(LABEL, records)])
    except SyncError as exc:
        return type(exc).__name__, contents(storage.connection)
    outcome = (result.summary(), sorted(map(repr, result.errors)), dict(result.applied), violations)
    return outcome, contents(storage.connection)


@settings(max_examples=200, deadline=None)
@given(raw=pages(), local=local_rows)
def test_a_page_is_applied_as_the_same_records_in_a_plain_dict_are(
    raw: dict[str, Any], local: dict[str, tuple[str, bool]]
) -> None:
    page = _plain_records(raw)
    if page is None:
        return  # not decodable on the fast path at all: nothing to compare
    plain = dict(page)
    assert page_columns(plain) is None
    with tempfile.TemporaryDirectory() as folder:
        fast, slow = databases(Path(folder), local)
        try:
            assert applied(fast, page) == applied(slow, plain)
        finally:
            fast.connection.close()
            slow.connection.close()


def by_name(rows: PlainRows, lead: int) -> list[tuple[Any, ...]]:
    """Rows bound for the fields ``rows`` names, after ``lead`` leading values, with those values by field name."""
    names, values = rows
    return [(*row[:lead], dict(zip(names, row[lead:], strict=True))) for row in values]


@settings(max_examples=400, deadline=None)
@given(raw=pages())
def test_each_check_of_a_page_answers_as_for_a_plain_dict(raw: dict[str, Any]) -> None:
    page = _plain_records(raw)
    if page is None or page_columns(page) is None:
        return
    plain = dict(page)
    assert page == {key: SyncRecord.from_dict(key, record) for key, record in raw.items()}
    assert ModelPayload(LABEL, page).max_stamp() == ModelPayload(LABEL, plain).max_stamp()
    for known in (None, frozenset(FIELDS)):
        if all_storable(page, "id", known):  # False only sends the page to the exact checks
            assert record_problems(ModelPayload(LABEL, page), "id", known) == {}
    with tempfile.TemporaryDirectory() as folder:
        storage, twin = databases(Path(folder), {})
        twin.connection.close()
        try:
            model = storage._model(LABEL)
            assert storage.invalid_values(LABEL, page) == storage.invalid_values(LABEL, plain)
            assert split_unknown(model, page) == split_unknown(model, plain)
            fast_rows, slow_rows = plain_rows(model, page), plain_rows(model, plain)
            if fast_rows is not None:  # the fast path may decline; where it answers, it binds the same values
                assert slow_rows is not None
                assert by_name(fast_rows, 0) == by_name(slow_rows, 0)
            for received_at in (0, 7):
                assert by_name(shadow_rows(model.tracked, page, received_at), 3) == \
                    by_name(shadow_rows(model.tracked, plain, received_at), 3)
        finally:
            storage.connection.close()


def test_changing_a_page_drops_its_columns() -> None:
    raw = {key: {"data": {"id": key, "title": "t"}, "timestamps": {"id": 1, "title": 2}} for key in ("a", "b")}
    changes: list[Callable[[RecordPage], object]] = [
        lambda page: page.__setitem__("a", page["b"]), lambda page: page.__delitem__("a"), lambda page: page.pop("a"),
        lambda page: page.popitem(), lambda page: page.update(a=page["b"]), lambda page: page.setdefault("c", page["a"]),
        lambda page: page.clear(), lambda page: page.__ior__({"a": page["b"]}),
    ]
    for change in changes:
        page = _plain_records(raw)
        assert isinstance(page, RecordPage) and page_columns(page) is not None
        change(page)
        assert page_columns(page) is None

"""What a device keeps of received rows it cannot store as they are, so that nothing is lost.

- Fields its table has no column for (an older app version, or a column added
  on other devices first): kept beside the row with their stamps, read back
  into the row's record, so the device sends them with its own edits and
  nothing it pushes erases them; moved into the column once the table has it.
- Records its table refuses (a NOT NULL, CHECK or UNIQUE constraint): held
  whole, with SQLite's reason, and applied once the table takes them.

A server refuses unknown fields instead (PROTOCOL.md 7), so its tables stay empty.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from itertools import repeat
from operator import le

from ..protocol.page import page_columns
from ..protocol.wire import META_FIELDS, SyncRecord
from .ddl import S_KEY, S_LM, S_PENDING, Tracked
from .mapping import IN_KEYS, TableMapping, keys_json
from .schema import quote
from .values import ValueMappingError, to_sqlite

Kept = dict[str, tuple[dict[str, object], dict[str, int]]]
"""key -> (value, stamp by field name) of the fields kept beside a row."""


def split_unknown(model: TableMapping, records: dict[str, SyncRecord]) -> tuple[dict[str, SyncRecord], Kept]:
    """``records`` as the table stores them, and what is kept beside them.

    The stored records carry only fields the table has; their stamps are those
    of the table's fields and of the kept fields, so that a row's
    last_modified is the same whether read back with its kept fields or
    computed from the record received. Stamps of fields the record carries no
    value for are dropped.
    """
    fields = model.field_set
    columns = page_columns(records)
    if columns is not None and fields.issuperset(columns.fields):
        return records, {}
    allowed = fields | META_FIELDS
    datas = [record.data for record in records.values()]
    stamps = [record.timestamps for record in records.values()]
    if all(map(le, map(dict.keys, datas), repeat(allowed))) and all(map(le, map(dict.keys, stamps), repeat(fields))):
        return records, {}
    stored: dict[str, SyncRecord] = {}
    kept: Kept = {}
    for key, record in records.items():
        extra = {name: value for name, value in record.data.items() if name not in allowed}
        named = fields | extra.keys()
        if extra:
            kept[key] = (extra, {name: record.timestamps[name] for name in extra if name in record.timestamps})
        if not extra and record.timestamps.keys() <= fields:
            stored[key] = record
            continue
        stored[key] = SyncRecord(
            key,
            {name: value for name, value in record.data.items() if name not in extra},
            {name: stamp for name, stamp in record.timestamps.items() if name in named},
            record.received_at,
        )
    return stored, kept


def with_kept(records: list[tuple[str, SyncRecord]], kept: Kept) -> list[tuple[str, SyncRecord]]:
    """Records read from the table, each with the fields kept beside its row."""
    if not kept:
        return records
    out = []
    for key, record in records:
        if key in kept:
            data, stamps = kept[key]
            record = SyncRecord(key, {**data, **record.data}, {**stamps, **record.timestamps}, record.received_at)
        out.append((key, record))
    return out


def has_rows(connection: sqlite3.Connection, table: str) -> bool:
    found: int = connection.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()[0]
    return found == 1


def read_kept(connection: sqlite3.Connection, tracked: Tracked, keys: Iterable[str]) -> Kept:
    """The kept fields of the rows among ``keys``."""
    rows = connection.execute(f'SELECT "key", "data", "stamps" FROM {tracked.kept} WHERE "key" IN {IN_KEYS}', (keys_json(keys),))
    return {key: (json.loads(data), json.loads(stamps)) for key, data, stamps in rows}


def write_kept(connection: sqlite3.Connection, tracked: Tracked, written: Iterable[str], kept: Kept) -> None:
    """The rows ``written`` now keep ``kept`` beside them, and nothing else: a record carries the whole row."""
    if has_rows(connection, tracked.kept):
        connection.execute(f'DELETE FROM {tracked.kept} WHERE "key" IN {IN_KEYS}', (keys_json(written),))
    connection.executemany(
        f'INSERT INTO {tracked.kept} ("key", "data", "stamps") VALUES (?, ?, ?)',
        [(key, json.dumps(data), json.dumps(stamps)) for key, (data, stamps) in kept.items()],
    )


def hold(connection: sqlite3.Connection, tracked: Tracked, refused: Mapping[str, tuple[SyncRecord, str]]) -> None:
    """Keep records the table refused, each with the reason, replacing what was held for their keys."""
    connection.executemany(
        f'INSERT OR REPLACE INTO {tracked.held} ("key", "record", "reason") VALUES (?, ?, ?)',
        [(key, json.dumps(record.to_dict()), reason) for key, (record, reason) in refused.items()],
    )


def release(connection: sqlite3.Connection, tracked: Tracked, keys: Iterable[str]) -> None:
    """Forget what was held for ``keys``: a version of the row was stored, or a delete removed it."""
    if has_rows(connection, tracked.held):
        connection.execute(f'DELETE FROM {tracked.held} WHERE "key" IN {IN_KEYS}', (keys_json(keys),))


def held_records(connection: sqlite3.Connection, tracked: Tracked) -> dict[str, tuple[SyncRecord, str]]:
    """key -> (the record held, why the table refused it)."""
    rows = connection.execute(f'SELECT "key", "record", "reason" FROM {tracked.held} ORDER BY "key"')
    return {key: (SyncRecord.from_dict(key, json.loads(record)), reason) for key, record, reason in rows}


def column_default(connection: sqlite3.Connection, table: str, column: str) -> object:
    """The value a column added by ALTER TABLE gives the rows that were there (its DEFAULT, else NULL)."""
    row = connection.execute('SELECT "dflt_value" FROM pragma_table_info(?) WHERE "name" = ?', (table, column)).fetchone()
    if row is None or row[0] is None:
        return None
    value: object = connection.execute(f"SELECT {row[0]}").fetchone()[0]  # the schema's own DEFAULT expression
    return value


def adopt_columns(connection: sqlite3.Connection, model: TableMapping, added: Iterable[str], stamp: int) -> None:
    """The table gained the columns ``added``: fill them, with their stamps, from what was kept.

    A row whose new column holds its DEFAULT (as ALTER TABLE left it) takes the value kept for it,
    with the kept stamp. A row whose new column holds anything else was written there by a writer
    the triggers could not see yet (e.g. sqlite-utils' ``alter=True``): a local write, stamped
    ``stamp`` and pending. Rows with neither keep stamp 0 (never written). The caller keeps the
    capture triggers from logging these writes.
    """
    tracked = model.tracked
    added = [name for name in added if name in model.field_set]
    if not added:
        return
    defaults = {name: column_default(connection, tracked.table, name) for name in added}
    if has_rows(connection, tracked.kept):
        for key, data_json, stamps_json in connection.execute(f'SELECT "key", "data", "stamps" FROM {tracked.kept}').fetchall():
            data, stamps = json.loads(data_json), json.loads(stamps_json)
            moved = [name for name in added if name in data]
            if not moved:
                continue
            for name in moved:
                try:
                    value = to_sqlite(model.kinds[name], data[name])
                except ValueMappingError:
                    continue  # the new column cannot take it as it is: it stays kept, and is sent as kept
                del data[name]
                column = quote(name)
                connection.execute(
                    f"UPDATE {tracked.base} SET {column} = ? WHERE {tracked.key_column} = ? AND {column} IS ?",
                    (value, key, defaults[name]),
                )
                connection.execute(
                    f"UPDATE {tracked.shadow} SET {column} = ? WHERE {S_KEY} = ? AND EXISTS "
                    f"(SELECT 1 FROM {tracked.base} WHERE {tracked.key_column} = ? AND {column} IS ?)",
                    (stamps.pop(name, 0), key, key, value),
                )
            if data:
                connection.execute(f'UPDATE {tracked.kept} SET "data" = ?, "stamps" = ? WHERE "key" = ?',
                                   (json.dumps(data), json.dumps(stamps), key))
            else:
                connection.execute(f'DELETE FROM {tracked.kept} WHERE "key" = ?', (key,))
    for name in added:
        column = quote(name)
        connection.execute(
            f"UPDATE {tracked.shadow} SET {column} = :stamp, {S_LM} = max({S_LM}, :stamp), {S_PENDING} = 1 "
            f"WHERE coalesce({column}, 0) = 0 AND {S_KEY} IN "
            f"(SELECT {tracked.key_column} FROM {tracked.base} WHERE {column} IS NOT :default)",
            {"stamp": stamp, "default": defaults[name]},
        )

"""Rows as records and back: how a tracked table's rows, stamps and values map to ``SyncRecord``s."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain, repeat
from operator import add, eq, itemgetter, le
from typing import Any

from ..engine.protocols import Cursor
from ..errors import RecordFieldError
from ..protocol.page import page_columns
from ..protocol.wire import META_FIELDS, SyncRecord
from .ddl import S_KEY, S_LM, S_RECEIVED, Tracked
from .schema import ForeignKey, TableSchema, affinity, quote
from .served import served_records
from .values import ColumnKind, ValueMappingError, ValueRule, rule_for, to_json, to_sqlite

IN_KEYS = "(SELECT value FROM json_each(?))"

PlainRows = tuple[Sequence[str], Sequence[Sequence[Any]]]
"""Rows to bind as they are, and the fields (columns) their values are for, in order."""


def keys_json(keys: Iterable[str]) -> str:
    """Keys as one bound JSON array, read back with ``json_each``: no statement per key, no variable limit."""
    return json.dumps(list(keys))


@dataclass(frozen=True)
class TableMapping:
    """A tracked table as sync reads and writes it: the registry entry, the schema, and the SQL and
    conversions they imply (cached: a mapping lives as long as the table's tracking does)."""

    tracked: Tracked
    schema: TableSchema

    @cached_property
    def select(self) -> str:
        """Columns of a record: key, received_at, one stamp per field, then the row's values."""
        tracked = self.tracked
        stamps = ", ".join(f"s.{quote(name)}" for name in tracked.fields)
        values = ", ".join(f"b.{quote(name)}" for name in tracked.fields)
        return (
            f"SELECT s.{S_KEY}, s.{S_RECEIVED}, {stamps}, {values} "
            f"FROM {tracked.shadow} AS s CROSS JOIN {tracked.base} AS b ON b.{tracked.key_column} = s.{S_KEY}"
        )

    @cached_property
    def value_rules(self) -> tuple[tuple[str, ValueRule], ...]:
        """(column, the values it takes) of every column but the key's (``values.invalid_values``)."""
        return tuple(
            (column.name, rule_for(column.kind, affinity(column.declared_type), nullable=not column.not_null))
            for column in self.schema.columns
            if column.name != self.tracked.key
        )

    @cached_property
    def stamp_aliases(self) -> dict[str, str]:
        """A foreign key's model field name -> its column, where the column is ``<field>_id`` and the
        table has no column ``<field>``: the name the existing clients stamp it under."""
        return {fk.columns[0][:-3]: fk.columns[0] for fk in self.schema.foreign_keys
                if len(fk.columns) == 1 and fk.columns[0].endswith("_id") and fk.columns[0][:-3] not in self.field_set}

    @cached_property
    def kinds(self) -> dict[str, ColumnKind]:
        return {column.name: column.kind for column in self.schema.columns}

    @cached_property
    def field_set(self) -> frozenset[str]:
        return frozenset(self.tracked.fields)

    @cached_property
    def text_references(self) -> tuple[ForeignKey, ...]:
        """Single-column FOREIGN KEYs whose column keeps bound text as it is (TEXT or no affinity)."""
        declared = {column.name: column.declared_type for column in self.schema.columns}
        return tuple(
            fk
            for fk in self.schema.foreign_keys
            if len(fk.columns) == 1 and fk.columns[0] in declared and affinity(declared[fk.columns[0]]) in ("TEXT", "BLOB")
        )

    @cached_property
    def plain(self) -> bool:
        """Every column binds JSON scalars as they are (booleans as 0/1), and none is named like a meta field."""
        return self.field_set.isdisjoint(META_FIELDS) and all(
            kind in (ColumnKind.PLAIN, ColumnKind.BOOLEAN) for kind in self.kinds.values()
        )

    @cached_property
    def _converted(self) -> tuple[tuple[int, ColumnKind], ...]:
        """(index, kind) of the columns whose values need :func:`to_json` even when no value is bytes."""
        columns = enumerate(self.schema.columns)
        return tuple((index, column.kind) for index, column in columns if column.kind is not ColumnKind.PLAIN)

    def records(self, rows: list[tuple[Any, ...]], *, served: bool = False) -> list[tuple[str, SyncRecord]]:
        """Rows of :attr:`select` as (key, record), in order; ``served``: records to be sent, which
        carry their wire text (see ``served.py``).

        Built column by column with C-level passes (this runs for every row
        served); values are mapped per column kind, and a page with no bytes in
        it (the usual case) converts only the non-plain columns.
        """
        if not rows:
            return []
        n = len(self.tracked.fields)
        columns = list(zip(*map(itemgetter(slice(2 + n, None)), rows), strict=True))
        converted = self._converted
        if bytes in set(map(type, chain.from_iterable(columns))):
            converted = tuple(enumerate(column.kind for column in self.schema.columns))
        for index, kind in converted:
            columns[index] = json_column(kind, columns[index])
        keys = list(map(itemgetter(0), rows))
        if served:
            stamp_columns = list(zip(*map(itemgetter(slice(2, 2 + n)), rows), strict=True))
            page = served_records(self.tracked.fields, columns, stamp_columns, list(map(itemgetter(1), rows)), keys)
            if page is not None:
                return list(zip(keys, page, strict=True))
        datas = map(dict, map(zip, repeat(self.schema.fields), zip(*columns, strict=True)))
        stamps = list(map(itemgetter(slice(2, 2 + n)), rows))
        timestamps = list(map(dict, map(zip, repeat(self.tracked.fields), stamps)))
        if None in set(chain.from_iterable(stamps)):  # fields with no stamp are left out of the map
            timestamps = [{name: stamp for name, stamp in m.items() if stamp is not None} for m in timestamps]
        return list(zip(keys, map(SyncRecord, keys, datas, timestamps, map(itemgetter(1), rows)), strict=True))


_AS_BOOLEAN = {0: False, 1: True}


def json_column(kind: ColumnKind, values: tuple[Any, ...]) -> tuple[Any, ...]:
    """:func:`to_json` of each value of a column; a BOOLEAN column of integers in one C-level pass."""
    if kind is ColumnKind.BOOLEAN and set(map(type, values)) <= {int, type(None)}:
        return tuple(map(_AS_BOOLEAN.get, values, values))  # 0 and 1 become booleans, the rest stays
    return tuple(map(to_json, repeat(kind), values))


def value_rows(model: TableMapping, records: dict[str, SyncRecord]) -> dict[tuple[str, ...], list[Sequence[Any]]]:
    """Each record's values as bound for its table, grouped by the fields it carries."""
    tracked = model.tracked
    kinds = model.kinds
    groups: dict[tuple[str, ...], list[Sequence[Any]]] = {}
    for key, record in records.items():
        data = record.user_data()
        data[tracked.key] = key
        names = tuple(name for name in tracked.fields if name in data)
        unknown = data.keys() - kinds.keys() - META_FIELDS  # stamps may name fields kept beside the row (kept.py)
        if unknown:
            raise RecordFieldError(f"{tracked.label} record {key!r}: unknown field(s) {sorted(unknown)[:5]}")
        try:
            groups.setdefault(names, []).append([to_sqlite(kinds[name], data[name]) for name in names])
        except ValueMappingError as exc:
            raise RecordFieldError(f"{tracked.label} record {key!r}: {exc}") from None
    return groups


_JSON_TYPES = frozenset({str, int, float, bool, list, dict, type(None)})


def json_types_adapted() -> bool:
    """The app registered an ``sqlite3`` adapter for a type JSON decodes to: a value bound as it is
    would then be stored as the adapter makes it, not as :func:`to_sqlite` maps it."""
    return not _JSON_TYPES.isdisjoint(kind for kind, _protocol in sqlite3.adapters)


def upsert_sql(tracked: Tracked, names: Sequence[str]) -> str:
    """Insert a row of the fields ``names`` (the key among them), or update the row with its key."""
    columns = ", ".join(quote(name) for name in names)
    marks = ", ".join("?" for _ in names)
    updates = ", ".join(f"{quote(name)} = excluded.{quote(name)}" for name in names if name != tracked.key)
    action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    return f"INSERT INTO {tracked.base} ({columns}) VALUES ({marks}) ON CONFLICT ({tracked.key_column}) {action}"


def plain_rows(model: TableMapping, records: dict[str, SyncRecord]) -> PlainRows | None:
    """The fast path of ``value_rows``, made with whole-page operations: when every record carries
    exactly the table's fields and its key as identity, in a table whose columns bind JSON scalars
    unchanged (plain or boolean). None: take the record-by-record path. The values are not looked
    at: a scalar binds as :func:`to_sqlite` would map it, and the binding refuses the rest (see
    ``SqliteSyncStorage._upsert_as_bound``). A decoded page's rows are its columns as they are."""
    tracked = model.tracked
    if not model.plain or json_types_adapted():
        return None
    fields = model.field_set
    columns = page_columns(records)
    if columns is not None:
        if fields != set(columns.fields) or columns.by_field[tracked.key] != tuple(records):
            return None
        if _BOOLEANS not in columns.kinds.values():
            return columns.fields, columns.values
        # True and False bind as 1 and 0, but sqlite3 tries (and fails) to adapt each of them first
        values = [map(int, column) if columns.kinds[name] == _BOOLEANS else column
                  for name, column in columns.by_field.items()]
        return columns.fields, list(zip(*values, strict=True))
    datas = [record.data for record in records.values()]
    stamps = (record.timestamps for record in records.values())
    if not all(map(eq, map(dict.keys, datas), repeat(fields))) or not all(map(le, map(dict.keys, stamps), repeat(fields))):
        return None
    if list(map(itemgetter(tracked.key), datas)) != list(records):
        return None
    rows = list(map(itemgetter(*tracked.fields), datas)) if len(tracked.fields) > 1 else [(key,) for key in records]
    return tracked.fields, rows


_BOOLEANS = frozenset({bool})


def shadow_rows(tracked: Tracked, records: dict[str, SyncRecord], received_at: int) -> PlainRows:
    """The fields stamped, and (key, last_modified, received_at, one stamp per field) of each record,
    column by column."""
    columns = page_columns(records)
    if columns is not None and set(columns.fields) == set(tracked.fields):
        newest = [max(received_at, stamp) for stamp in columns.newest] if received_at else columns.newest
        return columns.fields, list(map(add, zip(records, newest, repeat(received_at)), columns.stamps))
    maps = [record.timestamps for record in records.values()]
    newest = list(map(max, map(dict.values, maps))) if all(maps) else [max(m.values(), default=0) for m in maps]
    if received_at:
        newest = [max(received_at, stamp) for stamp in newest]
    stamp_columns = [list(map(dict.get, maps, repeat(name))) for name in tracked.fields]
    return tracked.fields, list(zip(records, newest, repeat(received_at), *stamp_columns))


def lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def record_json(record: SyncRecord | None) -> str | None:
    return None if record is None else json.dumps(record.to_dict(), separators=(",", ":"))


def position_filter(since: int, after: Cursor | None) -> tuple[str, list[Any]]:
    """The WHERE part selecting rows strictly after a checkpoint or a cursor, in (last_modified, key) order."""
    if after is None:
        return f"s.{S_LM} > ?", [since]
    return f"(s.{S_LM}, s.{S_KEY}) > (?, ?)", [after.timestamp, after.key]

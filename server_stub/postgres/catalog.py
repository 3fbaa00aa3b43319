"""What the server needs to know of a PostgreSQL table: its columns, key, foreign keys, and the values each column takes.

PostgreSQL folds unquoted names to lower case, so a table the config's schema
creates as ``CREATE TABLE TodoList`` is ``todolist`` in the catalog: a table is
found by its exact name first, then by its folded one. Columns go on the wire
under their catalog names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import Any

from client_sdk.errors import InvalidParameterError
from client_sdk.sqlite.values import ValueRule

from .connection import Connection

_TEXT = ("text", "character varying", "character")
_INTEGERS = {"smallint": 1 << 15, "integer": 1 << 31, "bigint": 1 << 63}
_FLOATS = ("double precision", "numeric")
"""Not ``real``: it holds 4-byte floats, so most numbers a device sends (8-byte, as SQLite's REAL) would come back changed."""
_JSON = ("json", "jsonb")
SUPPORTED = (*_TEXT, *_INTEGERS, *_FLOATS, "boolean", *_JSON)


@dataclass(frozen=True)
class ForeignKey:
    """A single-column FOREIGN KEY between synced tables."""

    column: str
    parent_table: str
    parent_column: str
    on_delete: str
    """pg_constraint.confdeltype: 'a' no action, 'r' restrict, 'c' cascade, 'n' set null, 'd' set default."""
    name: str
    deferrable: bool


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool


@dataclass(frozen=True)
class Table:
    """One synced table as the catalog describes it."""

    name: str
    key: str
    columns: tuple[Column, ...]
    foreign_keys: tuple[ForeignKey, ...]

    @cached_property
    def fields(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @cached_property
    def value_rules(self) -> tuple[tuple[str, ValueRule], ...]:
        """(column, the JSON values it takes) of every column but the key's."""
        return tuple((column.name, rule_for(column)) for column in self.columns if column.name != self.key)

    @cached_property
    def types(self) -> dict[str, str]:
        """Column -> its type as PostgreSQL names it (``integer``, ``character varying``...)."""
        return {column.name: column.type for column in self.columns}

    @cached_property
    def decimal_columns(self) -> tuple[int, ...]:
        """Positions (in ``fields``) of the columns read back as ``Decimal``, which JSON carries as numbers."""
        return tuple(index for index, column in enumerate(self.columns) if column.type == "numeric")

    @cached_property
    def stamp_aliases(self) -> dict[str, str]:
        """A foreign key's model field name -> its column (``list`` -> ``list_id``), as the existing clients stamp it."""
        names = set(self.fields)
        return {fk.column[:-3]: fk.column for fk in self.foreign_keys
                if fk.column.endswith("_id") and fk.column[:-3] not in names}


def rule_for(column: Column) -> ValueRule:
    """The JSON values a column of this type takes: those that come back from it as they were sent."""
    nullable = column.nullable
    if column.type in _TEXT:
        return ValueRule("text", frozenset({str}), nullable=nullable)
    if column.type == "boolean":
        return ValueRule("true or false", frozenset({bool}), nullable=nullable)
    if column.type in _INTEGERS:
        bound = _INTEGERS[column.type]
        return ValueRule(f"an integer ({column.type})", frozenset(), frozenset({int}),
                         lambda value: -bound <= value < bound, nullable=nullable)
    if column.type in _FLOATS:
        return ValueRule("a number", frozenset({float}), frozenset({int}), lambda value: abs(value) <= 1 << 53, nullable=nullable)
    return ValueRule("a JSON value", frozenset({str, int, float, bool, list, dict}), nullable=nullable)


def as_text(column_type: str, value: Any) -> str | None:
    """``value`` (a JSON value its column takes, see :func:`rule_for`) as text PostgreSQL casts to ``column_type``."""
    if value is None:
        return None
    if column_type in _JSON:
        return json_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return value if isinstance(value, str) else str(value)


def json_text(value: Any) -> str:
    """``value`` as compact JSON that JSONB gives back as it was: JSONB keeps numbers as ``numeric``, so a
    float with an integral value is written with a fraction (``1e+20`` as ``100000000000000000000.0``), else it
    would come back an integer."""
    if isinstance(value, float) and value.is_integer():
        return format(value, ".1f")
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(key)}:{json_text(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(map(json_text, value)) + "]"
    return json.dumps(value)


def json_number(value: Decimal) -> int | float:
    """A ``numeric`` column's value as JSON carries it."""
    return int(value) if value == value.to_integral_value() else float(value)


def find_table(connection: Connection, name: str) -> str | None:
    """The catalog name of the table the config calls ``name`` (exact, else folded to lower case), if it exists."""
    for candidate in (name, name.lower()):
        row = connection.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema() AND c.relname = %s",
            (candidate,),
        ).fetchone()
        if row is not None:
            found: str = row[0]
            return found
    return None


def read_table(connection: Connection, name: str, identity_field: str) -> Table:
    """The catalog's description of table ``name`` (its catalog name); a clear error if sync cannot use it."""
    rows = connection.execute(
        "SELECT a.attname, format_type(a.atttypid, NULL), NOT a.attnotnull FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(quote_ident(%s)) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (name,),
    ).fetchall()
    columns = tuple(Column(column, kind, nullable) for column, kind, nullable in rows)
    unsupported = [f"{column.name} ({column.type})" for column in columns if column.type not in SUPPORTED]
    if unsupported:
        raise InvalidParameterError(
            f"table {name!r}: column type(s) sync cannot carry on PostgreSQL: {', '.join(unsupported)}; "
            f"use one of {', '.join(SUPPORTED)}"
            + (" (real is a 4-byte float on PostgreSQL, where SQLite's REAL is 8 bytes: use double precision)"
               if any(column.type == "real" for column in columns) else "")
        )
    key = _primary_key(connection, name)
    if key != [identity_field]:
        raise InvalidParameterError(f"table {name!r}: its primary key must be the one column {identity_field!r}, not {key}")
    key_type = next(column.type for column in columns if column.name == identity_field)
    if key_type not in ("text", "character varying"):  # keys are strings on the wire, as on devices
        raise InvalidParameterError(f"table {name!r}: key column {identity_field!r} must be TEXT (or VARCHAR), not {key_type}")
    return Table(name, identity_field, columns, _foreign_keys(connection, name))


def _primary_key(connection: Connection, table: str) -> list[str]:
    rows = connection.execute(
        "SELECT a.attname FROM pg_constraint c CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, position) "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
        "WHERE c.conrelid = to_regclass(quote_ident(%s)) AND c.contype = 'p' ORDER BY k.position",
        (table,),
    ).fetchall()
    return [name for (name,) in rows]


def _foreign_keys(connection: Connection, table: str) -> tuple[ForeignKey, ...]:
    rows = connection.execute(
        "SELECT a.attname, p.relname, pa.attname, c.confdeltype, c.conname, c.condeferrable FROM pg_constraint c "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
        "JOIN pg_class p ON p.oid = c.confrelid "
        "JOIN pg_attribute pa ON pa.attrelid = c.confrelid AND pa.attnum = c.confkey[1] "
        "WHERE c.conrelid = to_regclass(quote_ident(%s)) AND c.contype = 'f' AND cardinality(c.conkey) = 1 ORDER BY c.conname",
        (table,),
    ).fetchall()
    return tuple(ForeignKey(*row) for row in rows)

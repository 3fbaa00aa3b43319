"""JSON <-> SQLite value mapping, chosen per column from its declared type.

SQLite stores INTEGER, REAL, TEXT, BLOB and NULL; JSON has numbers, strings,
booleans, null, arrays and objects. The declared type decides the mapping:

- ``BOOLEAN`` / ``BOOL`` columns hold 0/1 and read back as JSON booleans;
- ``JSON`` columns hold JSON text (numbers are stored as numbers, because the
  column's NUMERIC affinity would convert numeric-looking text anyway) and read
  back parsed;
- columns with BLOB affinity (declared type containing ``BLOB``) hold bytes and
  travel as base64 text;
- anything else stores the value as is; bytes met in such a column (written by
  some other program) read back as base64 text, since JSON cannot carry bytes.

:func:`rule_for` says which JSON values a column takes: those that come back
from it as they were sent (see :class:`ValueRule`), so every node reads the
same value.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from itertools import repeat
from typing import Any

from ..protocol.page import page_columns
from ..protocol.wire import SyncRecord

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


class ColumnKind(Enum):
    PLAIN = "plain"
    BOOLEAN = "boolean"
    BLOB = "blob"
    JSON = "json"


class ValueMappingError(ValueError):
    """A JSON value that cannot be stored in its column."""


def kind_for(declared_type: str) -> ColumnKind:
    """The mapping for a column declared as ``declared_type`` (e.g. ``"VARCHAR(20)"``)."""
    base = declared_type.split("(", 1)[0].strip().upper()
    if base in ("BOOLEAN", "BOOL"):
        return ColumnKind.BOOLEAN
    if base == "JSON":
        return ColumnKind.JSON
    if "BLOB" in base:
        return ColumnKind.BLOB
    return ColumnKind.PLAIN


def to_sqlite(kind: ColumnKind, value: Any) -> Any:
    """The SQLite value to bind for the JSON ``value``."""
    if value is None:
        return None
    if kind is ColumnKind.JSON:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return _number(value)
    if kind is ColumnKind.BLOB and isinstance(value, str):
        try:
            return base64.b64decode(value.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise ValueMappingError("expected base64 text for a BLOB column") from None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


def to_json(kind: ColumnKind, value: Any) -> Any:
    """The JSON value for the SQLite ``value`` read from a column of this kind."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if kind is ColumnKind.BOOLEAN and isinstance(value, int) and value in (0, 1):
        return bool(value)
    if kind is ColumnKind.JSON and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _number(value: int | float) -> int | float:
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        raise ValueMappingError("integer outside the 64-bit range SQLite stores")
    return value


DOUBLE_EXACT = 1 << 53
"""Every integer up to this size is a double; past it, only some are."""


@dataclass(frozen=True)
class ValueRule:
    """The JSON values a column takes: any of ``types``, those of ``checked`` that ``fits`` accepts,
    and null if ``nullable``. Whatever else would be refused by SQLite or come back changed."""

    expected: str
    """What the column takes, for error messages: "an integer", "text"..."""
    types: frozenset[type]
    checked: frozenset[type] = frozenset()
    fits: Callable[[Any], bool] | None = None
    nullable: bool = True

    @property
    def held(self) -> frozenset[type]:
        """The types taken whatever the value."""
        return self.types | {type(None)} if self.nullable else self.types

    def problem(self, name: str, value: Any) -> str | None:
        """Why the column ``name`` cannot hold ``value``, or None if it can."""
        kind = type(value)
        if kind in self.held or (kind in self.checked and self.fits is not None and self.fits(value)):
            return None
        if value is None:
            return f"field {name!r}: expected {self.expected}, not null"
        return f"field {name!r}: expected {self.expected}, got {kind.__name__} {_shown(value)}"


def rule_for(kind: ColumnKind, affinity: str, *, nullable: bool = True) -> ValueRule:
    """The :class:`ValueRule` of a column of this kind and SQLite affinity (``schema.affinity``).

    - BOOLEAN: true or false (to_json turns only 0/1 back into booleans);
    - JSON: any JSON value;
    - BLOB (declared): base64 text;
    - INTEGER affinity: integers, and floats with an integer value (SQLite stores them as that
      integer); a boolean is not an integer (it would come back as 0 or 1);
    - REAL affinity: floats, and integers a double holds exactly (SQLite stores them as REAL);
    - TEXT affinity: text (SQLite would store a number as its text);
    - NUMERIC affinity, or no declared type: numbers and text.

    Objects and lists go only to JSON columns (others would keep their text), booleans only to
    BOOLEAN and JSON columns (others would keep 0 or 1).
    """
    if kind is ColumnKind.BOOLEAN:
        return ValueRule("true or false", frozenset({bool}), nullable=nullable)
    if kind is ColumnKind.JSON:
        return ValueRule("a JSON value", frozenset({str, int, float, bool, dict, list}), nullable=nullable)
    if kind is ColumnKind.BLOB:
        return ValueRule("base64 text", frozenset(), frozenset({str}), _is_base64, nullable=nullable)
    if affinity == "INTEGER":
        return ValueRule("an integer", frozenset({int}), frozenset({float}), _whole, nullable=nullable)
    if affinity == "REAL":
        return ValueRule("a number (a double: integers up to 2**53)", frozenset({float}), frozenset({int}),
                         _exact_double, nullable=nullable)
    if affinity == "TEXT":
        return ValueRule("text", frozenset({str}), nullable=nullable)
    return ValueRule("a number or text", frozenset({int, float, str}), nullable=nullable)


def _whole(value: float) -> bool:
    return value.is_integer() and INT64_MIN <= value < -INT64_MIN


def _exact_double(value: int) -> bool:
    if -DOUBLE_EXACT <= value <= DOUBLE_EXACT:
        return True
    try:
        return float(value) == value  # an int compares with a float exactly
    except OverflowError:
        return False


def _is_base64(value: str) -> bool:
    try:
        base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return False
    return True


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_ABSENT = object()
"""A field a record leaves out."""


def invalid_values(rules: Sequence[tuple[str, ValueRule]], records: Mapping[str, SyncRecord]) -> dict[str, str]:
    """Records holding a value its column's rule refuses: key -> each such field, with what its column
    takes. Fields a record leaves out are not looked at. A page is checked a column at a time by the
    set of types in it; only a column holding a type that needs a closer look (a float in an INTEGER
    column, base64 text for a BLOB) is read value by value."""
    columns = page_columns(records)
    datas = [] if columns is not None else [record.data for record in records.values()]
    found: dict[int, list[str]] = {}
    for name, rule in rules if records else ():
        if columns is not None:  # a decoded page: every record has the same fields, their types at hand
            column: Sequence[Any] = columns.by_field.get(name, ())
            if columns.kinds.get(name, frozenset()) <= rule.held:
                continue
        else:
            column = list(map(dict.get, datas, repeat(name), repeat(_ABSENT)))
            if set(map(type, column)) - {object} <= rule.held:
                continue
        for index, value in enumerate(column):
            problem = None if value is _ABSENT else rule.problem(name, value)
            if problem is not None:
                found.setdefault(index, []).append(problem)
    keys = list(records)
    return {keys[index]: "; ".join(problems[:5]) for index, problems in found.items()}

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
"""

from __future__ import annotations

import base64
import binascii
import json
from enum import Enum
from typing import Any

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

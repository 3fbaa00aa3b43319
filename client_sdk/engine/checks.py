"""Whether a node can store a record as it was sent: checks that need no storage (PROTOCOL.md 2).

``record_problems`` looks record by record and says why; ``all_storable`` makes
the same checks for a whole page with C-level passes, for the common case where
nothing is wrong (False only means "look record by record").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from itertools import chain, compress, repeat
from math import isfinite
from typing import Any

from ..protocol.hlc import HLC_MAX
from ..protocol.page import PageColumns, page_columns
from ..protocol.wire import META_FIELDS, ModelPayload, SyncRecord, is_text
from .options import is_int


def record_problems(payload: ModelPayload, identity_field: str, known: frozenset[str] | None) -> dict[str, str]:
    """Record by record: key -> why this node cannot store it as sent."""
    problems: dict[str, str] = {}
    for key, record in payload.records.items():
        identity = record.data.get(identity_field, key)
        if identity != key:
            problems[key] = f"{identity_field} {identity!r} does not match the record key"
            continue
        if record.is_ghost:
            problems[key] = "record has no timestamps (ghost record)"
            continue
        oversized = [name for name, value in record.data.items() if _out_of_range(value)]
        if oversized:
            problems[key] = f"integer out of the 64-bit range in field(s) {', '.join(sorted(oversized)[:5])}"
            continue
        unfit = unfit_values(record.data)
        if unfit:
            problems[key] = unfit
            continue
        if known is not None:
            unknown = (set(record.data) | set(record.timestamps)) - known - META_FIELDS
            if unknown:
                names = ", ".join(sorted(repr(name)[:40] for name in unknown)[:5])
                problems[key] = f"unknown field(s) for {payload.model_label}: {names}"
    return problems


def all_storable(records: dict[str, SyncRecord], identity_field: str, known: frozenset[str] | None) -> bool:
    """Whether :func:`record_problems` would find nothing: the same checks, made for a whole payload at once.
    False only means "look record by record"."""
    columns = page_columns(records)
    if columns is not None:
        return _page_storable(columns, records, identity_field, known)
    datas = [record.data for record in records.values()]
    stamps = [record.timestamps for record in records.values()]
    if not all(stamps) or list(map(dict.get, datas, repeat(identity_field), records)) != list(records):
        return False
    if not _storable_values(list(chain.from_iterable(map(dict.values, datas)))):
        return False
    if known is None:
        return True
    names = set(chain.from_iterable(datas))
    names.update(chain.from_iterable(stamps))
    return names <= known | META_FIELDS


def _page_storable(
    columns: PageColumns, records: dict[str, SyncRecord], identity_field: str, known: frozenset[str] | None
) -> bool:
    """:func:`all_storable` of a decoded page, a column at a time (every record has the same fields,
    each with a stamp)."""
    by_field = columns.by_field
    if identity_field in by_field and by_field[identity_field] != tuple(records):
        return False
    if not all(map(_storable_values, by_field.values(), columns.kinds.values())):
        return False
    return known is None or set(columns.fields) <= known | META_FIELDS


def _storable_values(values: Sequence[Any], kinds: AbstractSet[type] | None = None) -> bool:
    """Whether no value is one :func:`record_problems` refuses (for the types JSON makes; any other
    type makes it False). ``kinds``: the set of their types, when it is known."""
    types = list(map(type, values)) if kinds is None or len(kinds) > 1 else []
    kinds = set(types) if kinds is None else kinds
    if not kinds <= _JSON_TYPES:
        return False  # e.g. an int subclass (never from JSON): leave it to the exact checks

    def of(*wanted: type) -> Sequence[Any]:
        """The values of the ``wanted`` types."""
        return values if kinds <= set(wanted) else list(compress(values, map(wanted.__contains__, types)))

    integers = of(int) if int in kinds else ()
    if integers and (min(integers) < -HLC_MAX - 1 or max(integers) > HLC_MAX):
        return False
    if float in kinds and not isfinite(sum(of(float))):
        return False  # a NaN or an infinity (or finite numbers whose sum is too large: the exact check tells)
    if str in kinds and not is_text("".join(of(str))):
        return False
    return kinds.isdisjoint(_CONTAINERS) or _encodable(list(of(dict, list)))


_JSON_TYPES = frozenset({str, int, float, bool, type(None), dict, list})
_CONTAINERS = frozenset({dict, list})
NON_FINITE = "non-finite number (NaN or Infinity, which JSON cannot carry)"
LONE_SURROGATE = "text with a lone surrogate (not valid Unicode)"


def unfit_values(data: dict[str, Any]) -> str | None:
    """Why no node may store or send these values, naming the fields: a non-finite number, or text
    with a lone surrogate, as a value or anywhere inside one. None if there is neither."""
    found: dict[str, list[str]] = {}
    for name, value in data.items():
        reason = _value_problem(value)
        if reason is not None:
            found.setdefault(reason, []).append(repr(name)[:40])
    return "; ".join(f"{reason} in field(s) {', '.join(sorted(names)[:5])}" for reason, names in found.items()) or None


def _value_problem(value: object) -> str | None:
    """:data:`NON_FINITE` or :data:`LONE_SURROGATE` if ``value`` is or holds one (looked for without
    recursion: nesting is as deep as the parser allowed), else None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not isfinite(item):
                return NON_FINITE
        elif isinstance(item, str):
            if not is_text(item):
                return LONE_SURROGATE
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _encodable(containers: list[Any]) -> bool:
    """Whether the objects and lists are strict JSON that UTF-8 can encode, in one C-level pass
    (False also for what is too deep or not JSON at all: the exact check then looks)."""
    try:
        json.dumps(containers, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        return False
    return True


def _out_of_range(value: object) -> bool:
    """An integer SQLite cannot store (it has signed 64-bit integers)."""
    return is_int(value) and not -HLC_MAX - 1 <= value <= HLC_MAX

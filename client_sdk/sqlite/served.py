"""Rows read to be served: their wire text made a page at a time, their dicts only if asked for.

Encoding the records of a 2,000-row page through ``dict``s and ``json.dumps``
was most of what a server spent per page. Here each column of the page is
encoded once (C-level passes for text, integers and booleans; ``json.dumps``
value by value for anything else) and each record's canonical text is filled
into one template. :class:`ServedRecord` carries that text and builds its
``data`` and ``timestamps`` only when something reads them; from then on the
text is no longer trusted (whoever read the dicts may change them), and the
record is encoded like any other.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import repeat
from json.encoder import encode_basestring_ascii
from typing import Any

from ..protocol.wire import JsonDict, SyncRecord

_BOOLEANS = {True: "true", False: "false"}
_new = object.__new__


class ServedRecord(SyncRecord):
    """A :class:`SyncRecord` read from a page of stored rows, with its canonical text at hand.
    (Made by :func:`served_records`; constructed like a SyncRecord, it is an ordinary one.)"""

    _names: tuple[str, ...]
    _values: tuple[Any, ...]
    _stamps: tuple[int, ...]
    """The row's fields, and its values and stamps in their order (set by :func:`_served`)."""
    _text: str | None = None
    _data: JsonDict | None = None
    _timestamps: dict[str, int] | None = None

    @property
    def data(self) -> JsonDict:
        if self._data is None:
            self._text = None
            self._data = dict(zip(self._names, self._values, strict=True))
        return self._data

    @data.setter
    def data(self, value: JsonDict) -> None:
        self._text, self._data = None, value

    @property
    def timestamps(self) -> dict[str, int]:
        if self._timestamps is None:
            self._text = None
            self._timestamps = dict(zip(self._names, self._stamps, strict=True))
        return self._timestamps

    @timestamps.setter
    def timestamps(self, value: dict[str, int]) -> None:
        self._text, self._timestamps = None, value

    @property
    def sync_field_last_modified(self) -> int:
        if self._timestamps is None:
            return max(*self._stamps, self.received_at)
        return max(max(self._timestamps.values(), default=0), self.received_at)

    last_modified = sync_field_last_modified

    @property
    def canonical_text(self) -> str | None:
        return self._text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SyncRecord):
            return NotImplemented
        return (self.data, self.timestamps) == (other.data, other.timestamps)  # as SyncRecord's: not key, not received_at

    __hash__ = None  # type: ignore[assignment]  # as SyncRecord's


def served_records(
    names: tuple[str, ...], value_columns: Sequence[Sequence[Any]], stamp_columns: Sequence[Sequence[Any]],
    received: Sequence[int], keys: Sequence[str] | None = None,
) -> list[ServedRecord] | None:
    """The records of a page given column by column (values as JSON values, one stamp per field, in
    the order of ``names``), under ``keys`` (without them each record's ``key`` is ``""``); None if a
    stamp is missing (the map would leave that field out)."""
    if any(None in column for column in stamp_columns):
        return None
    order = sorted(range(len(names)), key=names.__getitem__)  # the keys of each map, as sort_keys orders them
    fields = ", ".join(f"{encode_basestring_ascii(names[index]).replace('%', '%%')}: %s" for index in order)
    template = f'{{"data": {{{fields}}}, "timestamps": {{{fields}}}}}'
    value_texts, stamp_texts = (_texts(value_columns[i]) for i in order), (_texts(stamp_columns[i]) for i in order)
    texts = map(template.__mod__, zip(*value_texts, *stamp_texts, strict=True))
    keyed = repeat("") if keys is None else keys
    values, stamps = zip(*value_columns, strict=True), zip(*stamp_columns, strict=True)  # row by row
    return list(map(_served, repeat(names), values, stamps, received, texts, keyed))


def _served(
    names: tuple[str, ...], values: tuple[Any, ...], stamps: tuple[int, ...], received_at: int, text: str, key: str
) -> ServedRecord:
    record = _new(ServedRecord)  # not through __init__: it is SyncRecord's, for copies (dataclasses.replace)
    record.__dict__ = {"key": key, "_names": names, "_values": values, "_stamps": stamps, "received_at": received_at,
                       "_text": text}
    return record


def _texts(values: Sequence[Any]) -> list[str]:
    """Each value's canonical JSON."""
    kinds = set(map(type, values))
    if kinds == {str}:
        return list(map(encode_basestring_ascii, values))
    if kinds == {int}:
        return list(map(int.__repr__, values))
    if kinds == {bool}:
        return list(map(_BOOLEANS.__getitem__, values))
    return [json.dumps(value, sort_keys=True) for value in values]


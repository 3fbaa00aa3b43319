"""A page of decoded records that all carry the same fields, held as columns too.

A server serving whole rows sends every record of a payload with the same
fields, in its data and its stamps alike. Decoding such a payload
(``wire._plain_records``) keeps, beside the records, their values and stamps
as tuples in one field order and each record's newest stamp, so that checking
and storing the page is whole-column work instead of a pass per check over
every record's dicts. Any change to the page drops the columns: a page that
was changed is an ordinary dict of records again.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from .hlc import HLC_MAX

if TYPE_CHECKING:
    from .wire import SyncRecord


@dataclass(frozen=True)
class PageColumns:
    """The records of a :class:`RecordPage` as rows: each record's values and stamps in ``fields``
    order, in the page's key order, and its newest stamp."""

    fields: tuple[str, ...]
    values: list[tuple[Any, ...]]
    stamps: list[tuple[int, ...]]
    newest: list[int]

    @cached_property
    def by_field(self) -> dict[str, tuple[Any, ...]]:
        """Field -> its values, one per record (the columns of :attr:`values`). (Not ``zip(*values)``,
        which makes an iterator per record: each few hundred of them set the garbage collector off.)"""
        return {name: tuple(map(itemgetter(index), self.values)) for index, name in enumerate(self.fields)}

    @cached_property
    def kinds(self) -> dict[str, frozenset[type]]:
        """Field -> the types of its values (looked at by more than one check)."""
        return {name: frozenset(map(type, column)) for name, column in self.by_field.items()}


def uniform_columns(datas: list[dict[str, Any]], maps: list[dict[Any, Any]]) -> PageColumns | None:
    """The columns of records whose data and stamp maps (``datas``, ``maps``: dicts) all have the same
    keys, two at least, with every stamp a valid one (PROTOCOL.md 2); None if they do not."""
    if not datas:
        return None
    fields = tuple(datas[0])
    width = len(fields)
    if width < 2 or set(map(len, datas)) != {width} or set(map(len, maps)) != {width}:
        return None  # (one field: itemgetter would not make tuples; a table of keys alone is rare)
    if set(map(type, fields)) != {str}:
        return None
    row = itemgetter(*fields)
    try:
        values = list(map(row, datas))
        stamps = list(map(row, maps))
    except KeyError:
        return None
    if set(map(type, chain.from_iterable(stamps))) != {int}:
        return None
    newest = list(map(max, stamps))
    if min(map(min, stamps)) < 0 or max(newest) > HLC_MAX:
        return None
    return PageColumns(fields, values, stamps, newest)


class RecordPage(dict[str, "SyncRecord"]):
    """Records by key, with their :class:`PageColumns` while the page is as it was decoded."""

    __slots__ = ("columns",)

    def __init__(self, records: Any, columns: PageColumns) -> None:
        super().__init__(records)
        self.columns: PageColumns | None = columns

    def __setitem__(self, key: str, value: SyncRecord) -> None:
        self.columns = None
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.columns = None
        super().__delitem__(key)

    def __ior__(self, other: Any) -> RecordPage:  # type: ignore[override, misc]
        self.columns = None
        return super().__ior__(other)

    def clear(self) -> None:
        self.columns = None
        super().clear()

    def pop(self, *args: Any) -> Any:
        self.columns = None
        return super().pop(*args)

    def popitem(self) -> tuple[str, SyncRecord]:
        self.columns = None
        return super().popitem()

    def setdefault(self, *args: Any) -> Any:
        self.columns = None
        return super().setdefault(*args)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.columns = None
        super().update(*args, **kwargs)


def page_columns(records: object) -> PageColumns | None:
    """The columns of ``records`` if they are a :class:`RecordPage` still as decoded, else None."""
    return records.columns if type(records) is RecordPage else None

"""The record/byte budget one manifest may fill (PROTOCOL.md 7.3)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from ..protocol.wire import SyncRecord

READ_CHUNK = 1000
"""Rows fetched per storage call while filling a byte-only budget."""

_encode = json.JSONEncoder(separators=(",", ":")).encode


def record_size(record: SyncRecord) -> int:
    """A record's size is the length of its wire JSON."""
    return len(_encode(record.to_dict()))


def records_size(records: Iterable[SyncRecord]) -> tuple[int, int]:
    """(count, size) of many records at once: one encoder call instead of one per record."""
    dicts = [record.to_dict() for record in records]
    return len(dicts), len(_encode(dicts)) - 1 - len(dicts)  # less the brackets and commas


class Budget:
    """Shared across models; the first record always fits."""

    def __init__(self, records_max: int | None, bytes_max: int | None) -> None:
        self.records_max = records_max
        self.bytes_max = bytes_max
        self.records = 0
        self.bytes = 0

    @property
    def exhausted(self) -> bool:
        """Nothing more fits (checked before reading further rows)."""
        return bool(self.records) and (
            (self.records_max is not None and self.records >= self.records_max)
            or (self.bytes_max is not None and self.bytes >= self.bytes_max)
        )

    def take(self, size: int) -> bool:
        """Reserve room for one more item of ``size`` bytes; False if it does not fit."""
        if self.records and (
            (self.records_max is not None and self.records >= self.records_max)
            or (self.bytes_max is not None and self.bytes + size > self.bytes_max)
        ):
            return False
        self.records += 1
        self.bytes += size
        return True

    def take_record(self, record: SyncRecord) -> bool:
        """:meth:`take` for a record, measured only if there is a byte limit."""
        return self.take(0 if self.bytes_max is None else record_size(record))

    def take_all(self, records: Iterable[SyncRecord]) -> bool:
        """Reserve room for all of ``records`` if they fit together, else reserve nothing.
        Without a byte limit, records are counted, not measured."""
        if self.bytes_max is None:
            records = list(records)
            count, size = len(records), 0
        else:
            count, size = records_size(records)
        if self.records_max is not None and self.records + count > self.records_max:
            return False
        if self.bytes_max is not None and self.bytes + size > self.bytes_max:
            return False
        self.records += count
        self.bytes += size
        return True

    def remaining_records(self) -> int | None:
        return None if self.records_max is None else max(self.records_max - self.records, 0)

"""Which fields of an in-memory object changed since a snapshot."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


class FieldUpdateTracker:
    """``snapshot(fields)`` remembers values; ``get_dirty(current)`` names the fields that differ.

    For apps that hold rows as objects and want to write back only what the
    user changed (so only those fields get new stamps).
    """

    def __init__(self) -> None:
        self._snapshot: dict[str, Any] = {}

    def snapshot(self, fields: Mapping[str, Any]) -> None:
        self._snapshot = copy.deepcopy(dict(fields))

    def get_dirty(self, current: Mapping[str, Any]) -> set[str]:
        dirty = {name for name, value in current.items() if name not in self._snapshot or self._snapshot[name] != value}
        return dirty | (set(self._snapshot) - set(current))

"""The node's HLC state, persisted in the database's one-row clock table."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from .changelog import read_clock, write_clock
from .transaction import Transactions


class SqliteClockState:
    """A :class:`~client_sdk.protocol.hlc.ClockState` kept in ``_sync_clock``.

    The change log is folded before every read and advance, so the Python clock
    always sits at or past every stamp the triggers' writes were given, and the
    stamps given to logged writes never depend on Python-side advances made
    after them. Survives restarts; shared by every process using the file.
    """

    def __init__(self, connection: sqlite3.Connection, transactions: Transactions, fold_log: Callable[[], None]) -> None:
        self._connection = connection
        self._transactions = transactions
        self._fold_log = fold_log

    def read(self) -> int:
        self._fold_log()
        return read_clock(self._connection)

    def advance(self, step: Callable[[int], int]) -> int:
        with self._transactions():
            self._fold_log()
            stamp = step(read_clock(self._connection))
            write_clock(self._connection, stamp)
            return stamp

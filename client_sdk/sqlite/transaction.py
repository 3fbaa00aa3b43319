"""Nestable write transactions on one connection, safe across threads."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Transactions:
    """``with transactions():`` runs a block in one write transaction.

    The outermost block issues ``BEGIN IMMEDIATE`` (the write lock is taken up
    front, so two writers never deadlock on an upgrade) and commits or rolls
    back everything; nested blocks are savepoints, so an inner failure that the
    caller catches undoes only the inner block. If the connection is already in
    a transaction the app opened, the outermost block becomes a savepoint in it
    and the app's commit decides. One thread at a time: the lock is held for
    the whole block.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.lock = threading.RLock()
        self._depth = 0

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self.lock:
            own = self._depth == 0 and not self.connection.in_transaction
            savepoint = f'"_sync_sp{self._depth}"'
            self.connection.execute("BEGIN IMMEDIATE" if own else f"SAVEPOINT {savepoint}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                self._undo(own, savepoint)
                raise
            self._depth -= 1
            try:
                self.connection.execute("COMMIT" if own else f"RELEASE {savepoint}")
            except BaseException:
                self._undo(own, savepoint)  # e.g. a deferred foreign key violated at COMMIT
                raise

    def _undo(self, own: bool, savepoint: str) -> None:
        if own:
            if self.connection.in_transaction:
                self.connection.execute("ROLLBACK")
        else:
            self.connection.execute(f"ROLLBACK TO {savepoint}")
            self.connection.execute(f"RELEASE {savepoint}")

"""Nestable write transactions on one connection, safe across threads."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, Concatenate, ParamSpec, TypeVar

from ..errors import SyncAbortedError
from .failures import storage_errors


class Transactions:
    """``with transactions():`` runs a block in one write transaction.

    The outermost block issues ``BEGIN IMMEDIATE`` (the write lock is taken up
    front, so two writers never deadlock on an upgrade) and commits or rolls
    back everything; nested blocks are savepoints, so an inner failure that the
    caller catches undoes only the inner block. If the connection is already in
    a transaction the app opened, the outermost block becomes a savepoint in it
    and the app's commit decides. One thread at a time: the lock is held for
    the whole block.

    ``with transactions.write():`` is for sync's own bulk writes; see :meth:`write`. SQLite's errors
    inside a transaction leave it as :class:`StorageError`, after the rollback.
    """

    def __init__(self, connection: sqlite3.Connection, path: str | None = None) -> None:
        self.connection = connection
        self.path = path
        self.lock = threading.RLock()
        self._depth = 0
        self._failed_write = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self.lock, storage_errors(self.connection, self.path):
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
            if self._failed_write:
                self._undo(own, savepoint)
                raise SyncAbortedError("a write inside this transaction failed, so it was rolled back")
            try:
                self.connection.execute("COMMIT" if own else f"RELEASE {savepoint}")
            except BaseException:
                self._undo(own, savepoint)  # e.g. a deferred foreign key violated at COMMIT
                raise

    @contextmanager
    def write(self) -> Iterator[None]:
        """A block of writes that is atomic: a transaction of its own, or part of the one already open.

        Inside one of our transactions it takes no savepoint: with a savepoint
        open SQLite copies every page a statement touches into a statement
        journal, which made bulk upserts measure twice as slow. A block that
        fails there leaves the enclosing transaction unable to commit: the
        nearest level it leaves by an exception rolls back (and so undoes it);
        a level left normally after a swallowed failure rolls back and raises.
        """
        if self._depth == 0:
            with self():
                yield
            return
        with self.lock:
            try:
                yield
            except BaseException:
                self._failed_write = True
                raise

    def _undo(self, own: bool, savepoint: str) -> None:
        self._failed_write = False
        if own:
            if self.connection.in_transaction:
                self.connection.execute("ROLLBACK")
        else:
            self.connection.execute(f"ROLLBACK TO {savepoint}")
            self.connection.execute(f"RELEASE {savepoint}")


_P = ParamSpec("_P")
_R = TypeVar("_R")


def serialized(method: Callable[Concatenate[Any, _P], _R]) -> Callable[Concatenate[Any, _P], _R]:
    """For the methods of an object that owns ``_tx`` (:class:`Transactions`) on ``connection`` to the
    file at ``path``: one thread at a time on the shared connection; SQLite's errors leave as
    :class:`StorageError`."""

    @wraps(method)
    def wrapper(self: Any, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._tx.lock, storage_errors(self.connection, self.path):
            return method(self, *args, **kwargs)

    return wrapper

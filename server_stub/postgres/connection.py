"""Opening a PostgreSQL connection with psycopg 3 (the optional ``postgres`` extra), and its errors as the SDK's."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from client_sdk.errors import DatabaseLockedError, InvalidParameterError, StorageError

if TYPE_CHECKING:
    import psycopg

    Connection = psycopg.Connection[tuple[Any, ...]]
else:
    Connection = Any

INSTALL = "pip install 'offline-sync-sdk[postgres]'"
_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def is_postgres_url(database: str) -> bool:
    return database.startswith(("postgresql://", "postgres://"))


def shown(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    return _PASSWORD.sub(r"\1***@", url)


def connect(url: str) -> Connection:
    """An autocommit connection (transactions are opened explicitly); a start-up error saying what to do if
    psycopg is missing or the server cannot be reached."""
    try:
        import psycopg
    except ImportError:
        raise InvalidParameterError(
            f"database {shown(url)!r} is PostgreSQL, which needs the psycopg driver: {INSTALL}"
        ) from None
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidParameterError(f"database {shown(url)!r}: cannot connect: {reason}") from None


@contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """psycopg's errors leave the block as :class:`StorageError` (naming the database), a lock timeout as
    :class:`DatabaseLockedError`; the transaction they happened in is rolled back by its block."""
    import psycopg
    from psycopg import errors

    try:
        yield
    except (errors.LockNotAvailable, errors.QueryCanceled) as exc:
        raise DatabaseLockedError(f"database {shown(url)}: {str(exc).strip()}", path=shown(url)) from exc
    except psycopg.Error as exc:
        raise StorageError(f"database {shown(url)}: {str(exc).strip()}", path=shown(url)) from exc

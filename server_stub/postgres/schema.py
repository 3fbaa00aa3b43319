"""Creating the config's schema in a PostgreSQL database that has none of its synced tables yet."""

from __future__ import annotations

from collections.abc import Mapping

from client_sdk.errors import InvalidParameterError

from ..schema import schema_statements
from .catalog import find_table
from .connection import Connection


def create_schema(connection: Connection, script: str, models: Mapping[str, str]) -> list[str]:
    """Run ``script`` if none of the ``models``' tables exist (inside the caller's transaction); return the
    tables it created. A database holding some of them but not all is refused, naming the missing ones:
    on PostgreSQL the server does not change an existing schema (migrate it yourself)."""
    missing = [table for table in models if find_table(connection, table) is None]
    if not missing or not script.strip():
        return []
    if len(missing) < len(models):
        raise InvalidParameterError(
            f"the database lacks table(s) {', '.join(missing)} but has the other synced tables: on PostgreSQL the "
            "server creates the schema only in a database without any of them; create those tables yourself"
        )
    for statement in schema_statements(script):
        try:
            with connection.transaction():
                connection.execute(statement.encode())
        except Exception as exc:  # psycopg's errors: the statement is named, nothing of the schema stays
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidParameterError(f"schema: PostgreSQL refused {statement[:80]!r}: {first}") from None
    return missing

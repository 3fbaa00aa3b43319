"""Scoped sync on PostgreSQL: the statements of ``client_sdk/sqlite/scopes.py`` in PostgreSQL's dialect.

The membership tables live in the shared database and are brought up to date under
the round lock, so every server process answers a user from the same view.
Conditions keep the config's ``:user``, bound as a parameter, and are compiled at
start-up in a read-only transaction: one PostgreSQL refuses is an error naming
its table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from client_sdk.errors import InvalidParameterError
from client_sdk.sqlite.scopes import GONE, MEMBERS, NOW, Dialect, ScopedTable

from .connection import Connection

_PARAMETER_OR_LITERAL = re.compile(r"'(?:[^']|'')*'|(?<!:):([A-Za-z_]\w*)")


def psycopg_sql(sql: str) -> bytes:
    """SQL written with ``:name`` parameters as psycopg takes it: ``%(name)s``, and ``%`` doubled (also inside
    string literals, which keep any ``:word`` they hold; a ``::type`` cast is not a parameter)."""
    def replace(match: re.Match[str]) -> str:
        return match.group(0) if match.group(1) is None else f"%({match.group(1)})s"

    return _PARAMETER_OR_LITERAL.sub(replace, sql.replace("%", "%%")).encode()


POSTGRES = Dialect(
    ddl=(
        f'CREATE TABLE IF NOT EXISTS {MEMBERS} ("user" TEXT NOT NULL, "tbl" TEXT NOT NULL, "key" TEXT COLLATE "C" NOT NULL, '
        '"at" BIGINT NOT NULL, PRIMARY KEY ("user", "tbl", "key"))',
        f'CREATE INDEX IF NOT EXISTS "_sync_scope_members_at" ON {MEMBERS} ("user", "tbl", "at", "key")',
        f'CREATE TABLE IF NOT EXISTS {GONE} ("user" TEXT NOT NULL, "tbl" TEXT NOT NULL, "key" TEXT COLLATE "C" NOT NULL, '
        '"stamp" BIGINT NOT NULL, "hlc" BIGINT, PRIMARY KEY ("user", "tbl", "key"))',
        f'CREATE INDEX IF NOT EXISTS "_sync_scope_gone_stamp" ON {GONE} ("user", "tbl", "stamp")',
    ),
    now_ddl=f'CREATE TEMP TABLE IF NOT EXISTS {NOW} ("key" TEXT COLLATE "C" PRIMARY KEY)',
    greatest="greatest",
    join="JOIN",
    key_set="(SELECT unnest(CAST(:keys AS text[])))",
    no_limit=None,
    prepare=psycopg_sql,
    bind_keys=list,
)


def compile_scopes(connection: Connection, tables: Mapping[str, ScopedTable]) -> None:
    """Run each table's condition once, in a read-only transaction of its own (call outside any transaction)."""
    for scoped in tables.values():
        name = scoped.base.strip('"').replace('""', '"')
        others = sorted({match.group(1) for match in _PARAMETER_OR_LITERAL.finditer(scoped.condition)} - {None, "user"})
        if others:
            raise InvalidParameterError(
                f"scopes.{name}: the condition does not compile on table {name!r}: it names the parameter :{others[0]} "
                "(a condition is one SQL expression whose only parameter is :user)"
            )
        try:
            with connection.transaction():
                connection.execute(b"SET TRANSACTION READ ONLY")
                connection.execute(psycopg_sql(f"{scoped.visible} LIMIT 0"), {"user": ""})
        except Exception as exc:  # psycopg's: the condition does not compile, or tries to write
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidParameterError(
                f"scopes.{name}: the condition does not compile on table {name!r}: {first} "
                "(a condition is one SQL expression whose only parameter is :user)"
            ) from None


"""Scoped sync on PostgreSQL: the design of ``client_sdk/sqlite/scopes.py``, in PostgreSQL's SQL.

Per user, ``_sync_scope_members`` keeps the keys they can see, each with the stamp
at which it is theirs to receive, and ``_sync_scope_gone`` the rows that left
their view, delivered to their devices as deletes. Both are brought up to date at
the start of each of the user's requests, under the round lock, so every server
process sees the same membership. Conditions are the config's SQL with ``:user``
bound as a parameter (``%(user)s`` to psycopg), compiled at start-up in a
read-only transaction: one that PostgreSQL refuses is an error naming its table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from client_sdk.errors import InvalidParameterError
from client_sdk.protocol.hlc import HLC_MAX

from .connection import Connection

MEMBERS = '"_sync_scope_members"'
GONE = '"_sync_scope_gone"'
_NOW = '"_sync_scope_now"'
_USER = re.compile(r":user\b")

DDL = (
    f'CREATE TABLE IF NOT EXISTS {MEMBERS} ("user" TEXT NOT NULL, "tbl" TEXT NOT NULL, "key" TEXT COLLATE "C" NOT NULL, '
    '"at" BIGINT NOT NULL, PRIMARY KEY ("user", "tbl", "key"))',
    f'CREATE INDEX IF NOT EXISTS "_sync_scope_members_at" ON {MEMBERS} ("user", "tbl", "at", "key")',
    f'CREATE TABLE IF NOT EXISTS {GONE} ("user" TEXT NOT NULL, "tbl" TEXT NOT NULL, "key" TEXT COLLATE "C" NOT NULL, '
    '"stamp" BIGINT NOT NULL, "hlc" BIGINT, PRIMARY KEY ("user", "tbl", "key"))',
    f'CREATE INDEX IF NOT EXISTS "_sync_scope_gone_stamp" ON {GONE} ("user", "tbl", "stamp")',
)


def as_psycopg(condition: str) -> str:
    """The config's condition with ``:user`` as psycopg's named parameter (and ``%`` kept literal)."""
    return _USER.sub("%(user)s", condition.replace("%", "%%"))


class PostgresScopes:
    """What one user's requests read and check, for the scoped tables (label -> table and condition)."""

    def __init__(self, connection: Connection, tables: Mapping[str, Any], conditions: Mapping[str, str]) -> None:
        self.connection = connection
        self.tables = dict(tables)
        self.conditions = {label: as_psycopg(condition) for label, condition in conditions.items()}
        self.scopes = frozenset(conditions)
        self._seen_at: dict[str, int] = {}
        """User -> the clock when their visible rows were last brought up to date (every write moves it)."""

    def compile(self) -> None:
        """Compile every condition, each in a read-only transaction of its own (call outside any transaction)."""
        for label in self.conditions:
            table = self.tables[label]
            try:
                with self.connection.transaction():
                    self.connection.execute(b"SET TRANSACTION READ ONLY")
                    self.connection.execute(f"{self._visible(label)} LIMIT 0".encode(), {"user": ""})
            except Exception as exc:  # psycopg's: the condition does not compile, or tries to write
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise InvalidParameterError(
                    f"scopes.{table.table.name}: the condition does not compile on table {table.table.name!r}: {first} "
                    "(a condition is one SQL expression whose only parameter is :user)"
                ) from None

    def _visible(self, label: str) -> str:
        table = self.tables[label]
        return f"SELECT {table.key} FROM {table.base} WHERE ({self.conditions[label]})"

    def _run(self, sql: str, params: Mapping[str, Any]) -> Any:
        return self.connection.execute(sql.encode(), params)

    def refresh(self, user: str, clock_last: int, new_stamp: Callable[[], int]) -> None:
        """Bring ``user``'s visible rows up to date (inside the round lock's transaction): rows that entered
        are to be delivered at one new stamp, rows written since at their last_modified, rows that left go
        to the gone list."""
        if self._seen_at.get(user) == clock_last:
            return
        stamp: int | None = None
        self._run(f'CREATE TEMP TABLE IF NOT EXISTS {_NOW} ("key" TEXT COLLATE "C" PRIMARY KEY)', {})
        for label in self.conditions:
            table = self.tables[label]
            mine = {"user": user, "tbl": label}
            self._run(f"DELETE FROM {_NOW}", {})
            self._run(f'INSERT INTO {_NOW} ("key") {self._visible(label)} ON CONFLICT DO NOTHING', mine)
            changed = self._run(
                f'SELECT EXISTS (SELECT 1 FROM {_NOW} AS n WHERE NOT EXISTS (SELECT 1 FROM {MEMBERS} AS m '
                'WHERE m."user" = %(user)s AND m."tbl" = %(tbl)s AND m."key" = n."key")) OR EXISTS '
                f'(SELECT 1 FROM {MEMBERS} AS m WHERE m."user" = %(user)s AND m."tbl" = %(tbl)s AND NOT EXISTS '
                f'(SELECT 1 FROM {_NOW} AS n WHERE n."key" = m."key"))',
                mine,
            ).fetchone()[0]
            if changed:
                stamp = stamp if stamp is not None else new_stamp()
                self._follow(table, {**mine, "stamp": stamp})
            self._run(  # rows written since: delivered at their new last_modified
                f'UPDATE {MEMBERS} AS m SET "at" = s."lm" FROM {table.shadow} AS s WHERE m."user" = %(user)s '
                'AND m."tbl" = %(tbl)s AND s."key" = m."key" AND s."lm" > m."at"',
                mine,
            )
        self._seen_at[user] = stamp if stamp is not None else clock_last

    def forget(self, user: str) -> None:
        """The last refresh of ``user``'s rows was rolled back: the next one must not be skipped."""
        self._seen_at.pop(user, None)

    def _follow(self, table: Any, values: dict[str, object]) -> None:
        """Record the rows that entered and left the user's view (``_NOW`` holds it), at ``values["stamp"]``."""
        left = (f'm."user" = %(user)s AND m."tbl" = %(tbl)s AND NOT EXISTS (SELECT 1 FROM {_NOW} AS n '
                'WHERE n."key" = m."key")')
        self._run(
            f'INSERT INTO {GONE} ("user", "tbl", "key", "stamp", "hlc") SELECT %(user)s, %(tbl)s, m."key", %(stamp)s, '
            f'(SELECT coalesce(t."hlc", t."stamp") FROM {table.tomb} AS t WHERE t."key" = m."key") FROM {MEMBERS} AS m '
            f'WHERE {left} ON CONFLICT ("user", "tbl", "key") DO UPDATE SET "stamp" = EXCLUDED."stamp", "hlc" = EXCLUDED."hlc"',
            values,
        )
        self._run(f"DELETE FROM {MEMBERS} AS m WHERE {left}", values)
        self._run(f'DELETE FROM {GONE} AS g WHERE g."user" = %(user)s AND g."tbl" = %(tbl)s AND EXISTS '
                  f'(SELECT 1 FROM {_NOW} AS n WHERE n."key" = g."key")', values)
        self._run(f'INSERT INTO {MEMBERS} ("user", "tbl", "key", "at") SELECT %(user)s, %(tbl)s, "key", %(stamp)s '
                  f'FROM {_NOW} ON CONFLICT DO NOTHING', values)

    def page(self, label: str, user: str, since: int, after: tuple[int, str] | None, limit: int | None,
             until: int | None) -> tuple[str, dict[str, object]]:
        """The query (and its parameters) of a page of ``user``'s visible rows to deliver after ``since`` or the
        cursor ``after``, in the order of the stamp at which each is theirs (which ``received_at`` carries)."""
        table = self.tables[label]
        where = 'm."at" > %(since)s' if after is None else '(m."at", m."key") > (%(at)s, %(key)s)'
        if until is not None:
            where += ' AND m."at" <= %(until)s'
        sql = (
            f'SELECT m."key", greatest(s."received_at", m."at"), s."stamps", {table.select_values} FROM {MEMBERS} AS m '
            f'JOIN {table.shadow} AS s ON s."key" = m."key" JOIN {table.base} AS b ON {table.joined} '
            f'WHERE m."user" = %(user)s AND m."tbl" = %(tbl)s AND {where} ORDER BY m."at", m."key" LIMIT %(limit)s'
        )
        params: dict[str, object] = {"user": user, "tbl": label, "since": since, "until": until, "limit": limit}
        if after is not None:
            params["at"], params["key"] = after
        return sql, params

    def gone_since(self, label: str, user: str, since: int, until: int | None) -> dict[str, int]:
        """Rows that left ``user``'s view in the window: key -> the delete's own stamp, else the stamp of its leaving."""
        rows = self._run(
            f'SELECT "key", coalesce("hlc", "stamp") FROM {GONE} WHERE "user" = %(user)s AND "tbl" = %(tbl)s '
            'AND "stamp" > %(since)s AND "stamp" <= %(until)s',
            {"user": user, "tbl": label, "since": since, "until": HLC_MAX if until is None else until},
        )
        return dict(rows.fetchall())

    def hidden(self, label: str, user: str, keys: Iterable[str]) -> set[str]:
        """Of ``keys``, those whose row exists and is not ``user``'s to see."""
        table = self.tables[label]
        rows = self._run(
            f"SELECT b.{table.key} FROM {table.base} AS b WHERE b.{table.key} = ANY(%(keys)s) "
            f'AND NOT EXISTS (SELECT 1 FROM {MEMBERS} AS m WHERE m."user" = %(user)s AND m."tbl" = %(tbl)s '
            f'AND m."key" = b.{table.key})',
            {"keys": list(keys), "user": user, "tbl": label},
        )
        return {key for (key,) in rows.fetchall()}

    def departed(self, label: str, user: str, keys: Iterable[str]) -> dict[str, int]:
        """Of ``keys``, those that left ``user``'s view: key -> the delete their devices were sent."""
        rows = self._run(
            f'SELECT "key", coalesce("hlc", "stamp") FROM {GONE} WHERE "user" = %(user)s AND "tbl" = %(tbl)s '
            'AND "key" = ANY(%(keys)s)',
            {"user": user, "tbl": label, "keys": list(keys)},
        )
        return dict(rows.fetchall())

    def outside(self, label: str, user: str, keys: Iterable[str], at: int) -> set[str]:
        """Of ``keys`` (rows just written), those the condition does not give ``user``; the others are the
        user's from now on (at ``at``)."""
        table = self.tables[label]
        wanted = list(keys)
        inside = {key for (key,) in self._run(
            f"{self._visible(label)} AND {table.key} = ANY(%(keys)s)", {"user": user, "keys": wanted}
        ).fetchall()}
        if inside:
            with self.connection.cursor() as cursor:
                cursor.executemany(
                    f'INSERT INTO {MEMBERS} ("user", "tbl", "key", "at") VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING'.encode(),
                    [(user, label, key, at) for key in inside],
                )
        return set(wanted) - inside


"""Scoped sync on a server: each user sees and writes only the rows a SQL condition gives them.

A scope is a condition on one table's rows, with ``:user`` bound to the requesting
token's user (``owner = :user OR id IN (SELECT list_id FROM list_members WHERE
user_id = :user)``). A table without one is visible to every user.

What a user can see is kept per user (``_sync_scope_members``: the visible keys,
each with the stamp at which the user is to receive it: when it entered the view,
or its last_modified if later), brought up to date at the start of each of that
user's requests, in the transaction the request runs in. A row entering the scope
is stamped then, so it is delivered even if its own stamps are older than a
device's checkpoint (a list shared today with rows from last year); a row leaving
it (unshared, moved to a list the user cannot see, or deleted) is recorded in
``_sync_scope_gone`` and delivered to that user's devices as a delete, stamped
then too: each device removes it, and since sync's own deletes are never local
changes, nobody else hears of it. The delete carries the row's own tombstone stamp
where it was deleted, else the stamp of its leaving. Rows are served in the order
of that stamp (an index holds it), so paging and checkpoints stay exactly-once
per user.

The statements are written once, for both server backends: this package's SQLite
storage and server_stub's PostgreSQL one. They are written with ``:name``
parameters; what differs between the two dialects is a :class:`Dialect`.
Conditions are the server's configuration, compiled when the storage opens and
always run with ``:user`` bound, never formatted.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import InvalidParameterError
from ..protocol.hlc import HLC_MAX, HybridLogicalClock
from .ddl import S_KEY, S_LM, S_RECEIVED, TOMB_HLC
from .mapping import TableMapping
from .schema import quote

MEMBERS = '"_sync_scope_members"'
GONE = '"_sync_scope_gone"'
NOW = '"_sync_scope_now"'
"""A temporary table: the keys a condition gives the user now."""


class Executes(Protocol):
    """A DB-API connection as the scoped reads use it (``sqlite3`` and psycopg 3 both are one)."""

    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...


@dataclass(frozen=True)
class Dialect:
    """What differs between the backends' SQL in the statements below."""

    ddl: tuple[str, ...]
    """The membership tables and their indexes."""
    now_ddl: str
    """The temporary table :data:`NOW`."""
    greatest: str
    """The scalar function of the larger of two values."""
    join: str
    """How the page query joins (SQLite: ``CROSS JOIN``, which keeps the planner on the index)."""
    key_set: str
    """The bound list ``:keys`` as a subquery of keys."""
    no_limit: int | None
    prepare: Callable[[str], Any]
    """SQL written with ``:name`` parameters -> what the connection executes."""
    bind_keys: Callable[[list[str]], Any]
    """A list of keys as ``:keys`` is bound."""


SQLITE = Dialect(
    ddl=(
        f'CREATE TABLE IF NOT EXISTS {MEMBERS} ("user" TEXT NOT NULL, "tbl" INTEGER NOT NULL, "key" TEXT NOT NULL, '
        '"at" INTEGER NOT NULL, PRIMARY KEY ("user", "tbl", "key")) WITHOUT ROWID',
        f'CREATE INDEX IF NOT EXISTS "_sync_scope_members_at" ON {MEMBERS} ("user", "tbl", "at", "key")',
        f'CREATE TABLE IF NOT EXISTS {GONE} ("user" TEXT NOT NULL, "tbl" INTEGER NOT NULL, "key" TEXT NOT NULL, '
        '"stamp" INTEGER NOT NULL, "hlc" INTEGER, PRIMARY KEY ("user", "tbl", "key")) WITHOUT ROWID',
        f'CREATE INDEX IF NOT EXISTS "_sync_scope_gone_stamp" ON {GONE} ("user", "tbl", "stamp")',
    ),
    now_ddl=f'CREATE TEMP TABLE IF NOT EXISTS {NOW} ("key" TEXT PRIMARY KEY) WITHOUT ROWID',
    greatest="max",
    join="CROSS JOIN",
    key_set="(SELECT value FROM json_each(:keys))",
    no_limit=-1,
    prepare=str,
    bind_keys=json.dumps,
)


@dataclass(frozen=True)
class ScopedTable:
    """One scoped table as the statements name it (quoted names and SQL expressions)."""

    tbl: int | str
    """How the membership tables name the table."""
    condition: str
    base: str
    key: str
    shadow: str
    shadow_key: str
    shadow_lm: str
    shadow_received: str
    tomb: str
    tomb_hlc: str
    """The expression of a tombstone's own stamp."""
    columns: str
    """After the key and received_at, what a page reads: the storage's record columns (``s.`` shadow, ``b.`` base)."""

    @property
    def visible(self) -> str:
        """The keys of the rows the condition gives ``:user``."""
        return f"SELECT {self.key} FROM {self.base} WHERE ({self.condition})"


def sqlite_table(model: TableMapping, condition: str) -> ScopedTable:
    tracked = model.tracked
    stamps = ", ".join(f"s.{quote(name)}" for name in tracked.fields)
    values = ", ".join(f"b.{quote(name)}" for name in tracked.fields)
    return ScopedTable(tracked.id, condition, tracked.base, tracked.key_column, tracked.shadow, S_KEY, S_LM, S_RECEIVED,
                       tracked.tomb, TOMB_HLC, f"{stamps}, {values}")


def compile_scopes(connection: sqlite3.Connection, models: Mapping[str, TableMapping], scopes: Mapping[str, str]
                   ) -> dict[str, ScopedTable]:
    """Label -> scoped table, for ``scopes`` (table -> condition); each condition is compiled here, so that one
    that SQLite refuses (or that names a parameter other than ``:user``) is an error naming its table."""
    by_table = {model.tracked.table: label for label, model in models.items()}
    compiled = {}
    connection.execute("PRAGMA query_only = ON")  # a condition that smuggles in a statement cannot write
    try:
        for table, condition in scopes.items():
            if table not in by_table:
                synced = ", ".join(sorted(by_table))
                raise InvalidParameterError(f"scopes.{table}: not a synced table (the synced tables: {synced})")
            if not isinstance(condition, str) or not condition.strip():
                raise InvalidParameterError(f"scopes.{table}: the condition must be SQL text, e.g. \"owner = :user\"")
            scoped = sqlite_table(models[by_table[table]], condition)
            try:
                connection.execute(f"{scoped.visible} LIMIT 0", {"user": ""}).fetchall()
            except (sqlite3.Error, sqlite3.Warning) as exc:  # Warning: a second statement, on older Pythons
                hint = "" if isinstance(exc, sqlite3.OperationalError) else \
                    " (a condition is one SQL expression whose only parameter is :user)"
                raise InvalidParameterError(f"scopes.{table}: the condition does not compile on table {table!r}: "
                                            f"{exc}{hint}") from None
            compiled[by_table[table]] = scoped
    finally:
        connection.execute("PRAGMA query_only = OFF")
    return compiled


class ScopedReads:
    """What one user's requests read and check, for the scoped tables (label -> :class:`ScopedTable`)."""

    def __init__(self, connection: Executes, scopes: Mapping[str, ScopedTable], dialect: Dialect = SQLITE) -> None:
        self.connection = connection
        self.scopes = dict(scopes)
        self.dialect = dialect
        self._seen_at: dict[str, int] = {}
        """User -> the clock when their visible rows were last brought up to date (nothing changed since
        if the clock has not moved: every write moves it)."""

    def _execute(self, sql: str, params: Mapping[str, Any]) -> Any:
        return self.connection.execute(self.dialect.prepare(sql), params)

    def _rows(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._execute(sql, params).fetchall()
        return rows

    def refresh(self, user: str, clock_last: int, new_stamp: Callable[[], int]) -> None:
        """Bring ``user``'s visible rows up to date: rows that entered are to be delivered at a new stamp,
        rows written since at their last_modified, and rows that left go to the gone list. Call inside a
        write transaction; ``new_stamp`` issues one stamp for all of it."""
        if self._seen_at.get(user) == clock_last:
            return
        stamp: int | None = None
        self._execute(self.dialect.now_ddl, {})
        for scoped in self.scopes.values():
            mine = {"user": user, "tbl": scoped.tbl}
            self._execute(f"DELETE FROM {NOW}", {})
            self._execute(f'INSERT INTO {NOW} ("key") {scoped.visible} ON CONFLICT DO NOTHING', mine)
            changed = self._rows(
                f'SELECT EXISTS (SELECT 1 FROM {NOW} AS n WHERE NOT EXISTS (SELECT 1 FROM {MEMBERS} AS m '
                'WHERE m."user" = :user AND m."tbl" = :tbl AND m."key" = n."key")) OR EXISTS '
                f'(SELECT 1 FROM {MEMBERS} AS m WHERE m."user" = :user AND m."tbl" = :tbl AND NOT EXISTS '
                f'(SELECT 1 FROM {NOW} AS n WHERE n."key" = m."key"))',
                mine,
            )[0][0]
            if changed:
                stamp = stamp if stamp is not None else new_stamp()
                self._follow(scoped, {**mine, "stamp": stamp})
            self._execute(  # rows written since: delivered at their new last_modified
                f'UPDATE {MEMBERS} AS m SET "at" = s.{scoped.shadow_lm} FROM {scoped.shadow} AS s WHERE m."user" = :user '
                f'AND m."tbl" = :tbl AND s.{scoped.shadow_key} = m."key" AND s.{scoped.shadow_lm} > m."at"',
                mine,
            )
        self._seen_at[user] = stamp if stamp is not None else clock_last

    def forget(self, user: str) -> None:
        """The last refresh of ``user``'s rows was rolled back: the next one must not be skipped."""
        self._seen_at.pop(user, None)

    def _follow(self, scoped: ScopedTable, values: dict[str, object]) -> None:
        """Record the rows that entered and left ``values["user"]``'s view (:data:`NOW` holds it), at ``values["stamp"]``."""
        deleted = f'(SELECT {scoped.tomb_hlc} FROM {scoped.tomb} AS t WHERE t."key" = m."key")'
        left = f'm."user" = :user AND m."tbl" = :tbl AND NOT EXISTS (SELECT 1 FROM {NOW} AS n WHERE n."key" = m."key")'
        self._execute(
            f'INSERT INTO {GONE} ("user", "tbl", "key", "stamp", "hlc") SELECT :user, :tbl, m."key", :stamp, {deleted} '
            f'FROM {MEMBERS} AS m WHERE {left} '
            'ON CONFLICT ("user", "tbl", "key") DO UPDATE SET "stamp" = excluded."stamp", "hlc" = excluded."hlc"',
            values,
        )
        self._execute(f"DELETE FROM {MEMBERS} AS m WHERE {left}", values)
        self._execute(f'DELETE FROM {GONE} AS g WHERE g."user" = :user AND g."tbl" = :tbl AND EXISTS '
                      f'(SELECT 1 FROM {NOW} AS n WHERE n."key" = g."key")', values)
        self._execute(f'INSERT INTO {MEMBERS} ("user", "tbl", "key", "at") SELECT :user, :tbl, "key", :stamp '
                      f"FROM {NOW} WHERE true ON CONFLICT DO NOTHING", values)

    def page(self, label: str, user: str, since: int, after: tuple[int, str] | None, limit: int | None,
             until: int | None) -> tuple[Any, dict[str, object]]:
        """The query (and its parameters) of a page of ``user``'s visible rows to deliver after ``since`` or
        the cursor ``after``: the key, received_at, then :attr:`ScopedTable.columns`, in the order of the
        stamp at which each is the user's to receive (``"at"``: when it entered the view, or its
        last_modified if later), which the record's ``received_at`` carries."""
        scoped = self.scopes[label]
        where = 'm."at" > :since' if after is None else '(m."at", m."key") > (:at, :key)'
        if until is not None:  # nor a row this round wrote: until the next refresh, its cursor is past its "at"
            where += f' AND m."at" <= :until AND s.{scoped.shadow_lm} <= :until'
        join = self.dialect.join
        sql = (
            f'SELECT m."key", {self.dialect.greatest}(s.{scoped.shadow_received}, m."at"), {scoped.columns} '
            f'FROM {MEMBERS} AS m {join} {scoped.shadow} AS s ON s.{scoped.shadow_key} = m."key" '
            f'{join} {scoped.base} AS b ON b.{scoped.key} = m."key" WHERE m."user" = :user AND m."tbl" = :tbl '
            f'AND {where} ORDER BY m."at", m."key" LIMIT :limit'
        )
        params: dict[str, object] = {"user": user, "tbl": scoped.tbl, "since": since, "until": until,
                                     "limit": self.dialect.no_limit if limit is None else limit}
        if after is not None:
            params["at"], params["key"] = after
        return self.dialect.prepare(sql), params

    def gone_since(self, label: str, user: str, since: int, until: int | None) -> dict[str, int]:
        """Rows that left ``user``'s view in the window: key -> the delete's own stamp if it was deleted,
        else the stamp of its leaving."""
        rows = self._rows(
            f'SELECT "key", coalesce("hlc", "stamp") FROM {GONE} WHERE "user" = :user AND "tbl" = :tbl '
            'AND "stamp" > :since AND "stamp" <= :until',
            {"user": user, "tbl": self.scopes[label].tbl, "since": since, "until": HLC_MAX if until is None else until},
        )
        return dict(rows)

    def hidden(self, label: str, user: str, keys: Iterable[str]) -> set[str]:
        """Of ``keys``, those whose row exists and is not ``user``'s to see."""
        scoped = self.scopes[label]
        rows = self._rows(
            f"SELECT b.{scoped.key} FROM {scoped.base} AS b WHERE b.{scoped.key} IN {self.dialect.key_set} AND NOT EXISTS "
            f'(SELECT 1 FROM {MEMBERS} AS m WHERE m."user" = :user AND m."tbl" = :tbl AND m."key" = b.{scoped.key})',
            {"keys": self.dialect.bind_keys(list(keys)), "user": user, "tbl": scoped.tbl},
        )
        return {key for (key,) in rows}

    def departed(self, label: str, user: str, keys: Iterable[str]) -> dict[str, int]:
        """Of ``keys``, those that left ``user``'s view: key -> the delete their devices were sent."""
        rows = self._rows(
            f'SELECT "key", coalesce("hlc", "stamp") FROM {GONE} WHERE "user" = :user AND "tbl" = :tbl '
            f'AND "key" IN {self.dialect.key_set}',
            {"user": user, "tbl": self.scopes[label].tbl, "keys": self.dialect.bind_keys(list(keys))},
        )
        return dict(rows)

    def outside(self, label: str, user: str, keys: Iterable[str], at: int) -> set[str]:
        """Of ``keys`` (rows just written), those the condition does not give ``user``. The others are
        the user's from now on (at ``at``): if they leave the user's view before the user's next request,
        their devices still hear of it."""
        scoped = self.scopes[label]
        wanted = list(keys)
        mine = {"user": user, "tbl": scoped.tbl, "at": at, "keys": self.dialect.bind_keys(wanted)}
        inside = f"{scoped.visible} AND {scoped.key} IN {self.dialect.key_set}"
        self._execute(f'INSERT INTO {MEMBERS} ("user", "tbl", "key", "at") SELECT :user, :tbl, {scoped.key}, :at '
                      f"FROM {scoped.base} WHERE ({scoped.condition}) AND {scoped.key} IN {self.dialect.key_set} "
                      "ON CONFLICT DO NOTHING", mine)
        # a row the user brought back into their view (an edit newer than a delete) is no longer gone for them
        self._execute(f'DELETE FROM {GONE} AS g WHERE g."user" = :user AND g."tbl" = :tbl AND g."key" IN ({inside})', mine)
        return set(wanted) - {key for (key,) in self._rows(inside, mine)}


class AnswersForUsers:
    """``scoped_to`` of a server storage with scoped reads (both backends'): which scoped reads a request's
    label goes through, and the user's refresh in the transaction the block's requests then run in."""

    _scoped: ScopedReads | None
    _user: str | None = None
    clock: HybridLogicalClock

    def _round_transaction(self) -> AbstractContextManager[None]:
        """The write transaction a scoped request runs in (its round's transaction nests in it)."""
        raise NotImplementedError

    def _before_refresh(self) -> None:
        """What must be current before the user's rows are looked at (SQLite: the change log folded)."""

    def _scope_of(self, label: str) -> tuple[ScopedReads, str] | None:
        """The scoped reads ``label``'s requests go through for the current user, if any."""
        if self._user is None or self._scoped is None or label not in self._scoped.scopes:
            return None
        return self._scoped, self._user

    @contextmanager
    def scoped_to(self, user: str | None) -> Iterator[None]:
        """Answer the block's requests for ``user``: reads and writes of the scoped tables see only the
        rows the scopes give them (None, or a server without scopes: every row). The user's visible
        rows are brought up to date first, in the write transaction the block's requests then run in:
        a write another connection made in between would otherwise be missed (a member row updated
        after the refresh is delivered at its last_modified, which the device's new checkpoint passes)."""
        if user is None or self._scoped is None:
            yield
            return
        try:
            with self._round_transaction():
                self._before_refresh()
                self._scoped.refresh(user, self.clock.last, self.clock.now)
                self._user = user
                try:
                    yield
                finally:
                    self._user = None
        except BaseException:
            self._scoped.forget(user)  # its refresh was rolled back with the block
            raise

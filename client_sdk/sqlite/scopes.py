"""Scoped sync on a server: each user sees and writes only the rows a SQL condition gives them.

A scope is a condition on one table's rows, with ``:user`` bound to the requesting
token's user (``owner = :user OR id IN (SELECT list_id FROM list_members WHERE
user_id = :user)``). A table without one is visible to every user.

What a user can see is kept per user (``_sync_scope_members``: the visible keys,
each with the stamp at which the user is to receive it: when it entered the view,
or its last_modified if later), brought up to date at the start of each of that
user's requests. A row entering the scope is stamped then, so it is delivered
even if its own stamps are older than a device's checkpoint (a list shared today
with rows from last year); a row leaving it (unshared, moved to a list
the user cannot see, or deleted) is recorded in ``_sync_scope_gone`` and delivered
to that user's devices as a delete, stamped then too: each device removes it, and
since sync's own deletes are never local changes, nobody else hears of it. The
delete carries the row's own tombstone stamp where it was deleted, else the
stamp of its leaving. Rows are served in the order of that stamp (an index
holds it), so paging and checkpoints stay exactly-once per user.

Conditions are the server's configuration, compiled when the storage opens and
always run with ``:user`` bound, never formatted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ..errors import InvalidParameterError
from ..protocol.hlc import HLC_MAX
from .ddl import S_KEY, S_LM, S_RECEIVED, TOMB_HLC, Tracked
from .mapping import IN_KEYS, TableMapping, keys_json
from .schema import quote

MEMBERS = '"_sync_scope_members"'
GONE = '"_sync_scope_gone"'
_NOW = 'temp."_sync_scope_now"'

DDL = (
    f'CREATE TABLE IF NOT EXISTS {MEMBERS} ("user" TEXT NOT NULL, "tbl" INTEGER NOT NULL, "key" TEXT NOT NULL, '
    '"at" INTEGER NOT NULL, PRIMARY KEY ("user", "tbl", "key")) WITHOUT ROWID',
    f'CREATE INDEX IF NOT EXISTS "_sync_scope_members_at" ON {MEMBERS} ("user", "tbl", "at", "key")',
    f'CREATE TABLE IF NOT EXISTS {GONE} ("user" TEXT NOT NULL, "tbl" INTEGER NOT NULL, "key" TEXT NOT NULL, '
    '"stamp" INTEGER NOT NULL, "hlc" INTEGER, PRIMARY KEY ("user", "tbl", "key")) WITHOUT ROWID',
    f'CREATE INDEX IF NOT EXISTS "_sync_scope_gone_stamp" ON {GONE} ("user", "tbl", "stamp")',
)


@dataclass(frozen=True)
class Scope:
    """One table's condition."""

    model: TableMapping
    condition: str

    @property
    def visible(self) -> str:
        """The keys of the rows the condition gives ``:user``."""
        tracked = self.model.tracked
        return f"SELECT {tracked.key_column} FROM {tracked.base} WHERE ({self.condition})"


def compile_scopes(connection: sqlite3.Connection, models: Mapping[str, TableMapping], scopes: Mapping[str, str]
                   ) -> dict[str, Scope]:
    """Label -> scope, for ``scopes`` (table -> condition); each condition is compiled here, so that one
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
            scope = Scope(models[by_table[table]], condition)
            try:
                connection.execute(f"{scope.visible} LIMIT 0", {"user": ""}).fetchall()
            except (sqlite3.Error, sqlite3.Warning) as exc:  # Warning: a second statement, on older Pythons
                hint = "" if isinstance(exc, sqlite3.OperationalError) else \
                    " (a condition is one SQL expression whose only parameter is :user)"
                raise InvalidParameterError(f"scopes.{table}: the condition does not compile on table {table!r}: "
                                            f"{exc}{hint}") from None
            compiled[by_table[table]] = scope
    finally:
        connection.execute("PRAGMA query_only = OFF")
    return compiled


class ScopedReads:
    """What one user's requests read and check, for the scoped tables."""

    def __init__(self, connection: sqlite3.Connection, scopes: Mapping[str, Scope]) -> None:
        self.connection = connection
        self.scopes = dict(scopes)
        self._seen_at: dict[str, int] = {}
        """User -> the clock when their visible rows were last brought up to date (nothing changed since
        if the clock has not moved: every write moves it)."""

    def refresh(self, user: str, clock_last: int, new_stamp: Callable[[], int]) -> None:
        """Bring ``user``'s visible rows up to date: rows that entered are to be delivered at a new stamp,
        rows written since at their last_modified, and rows that left go to the gone list. Call inside a
        write transaction; ``new_stamp`` issues one stamp for all of it."""
        if self._seen_at.get(user) == clock_last:
            return
        stamp: int | None = None
        self.connection.execute(f'CREATE TEMP TABLE IF NOT EXISTS {_NOW[5:]} ("key" TEXT PRIMARY KEY) WITHOUT ROWID')
        for scope in self.scopes.values():
            tbl = scope.model.tracked.id
            self.connection.execute(f"DELETE FROM {_NOW}")
            self.connection.execute(f'INSERT OR IGNORE INTO {_NOW} ("key") {scope.visible}', {"user": user})
            mine = {"user": user, "tbl": tbl}
            changed = self.connection.execute(
                f'SELECT EXISTS (SELECT 1 FROM {_NOW} WHERE "key" NOT IN '
                f'(SELECT "key" FROM {MEMBERS} WHERE "user" = :user AND "tbl" = :tbl)) OR EXISTS '
                f'(SELECT 1 FROM {MEMBERS} WHERE "user" = :user AND "tbl" = :tbl AND "key" NOT IN (SELECT "key" FROM {_NOW}))',
                mine,
            ).fetchone()[0]
            if changed:
                stamp = stamp if stamp is not None else new_stamp()
                self._follow(scope, {**mine, "stamp": stamp})
            # rows written since: delivered at their new last_modified
            self.connection.execute(
                f'UPDATE {MEMBERS} SET "at" = s.{S_LM} FROM {scope.model.tracked.shadow} AS s '
                f'WHERE {MEMBERS}."user" = :user AND {MEMBERS}."tbl" = :tbl AND s.{S_KEY} = {MEMBERS}."key" '
                f'AND s.{S_LM} > {MEMBERS}."at"',
                mine,
            )
        self._seen_at[user] = stamp if stamp is not None else clock_last

    def forget(self, user: str) -> None:
        """The last refresh of ``user``'s rows was rolled back: the next one must not be skipped."""
        self._seen_at.pop(user, None)

    def _follow(self, scope: Scope, values: dict[str, object]) -> None:
        """Record the rows that entered and left ``values["user"]``'s view (``_NOW`` holds it), at ``values["stamp"]``."""
        deleted = f'(SELECT {TOMB_HLC} FROM {scope.model.tracked.tomb} AS t WHERE t."key" = m."key")'
        left = f'm."user" = :user AND m."tbl" = :tbl AND m."key" NOT IN (SELECT "key" FROM {_NOW})'
        self.connection.execute(
            f'INSERT OR REPLACE INTO {GONE} ("user", "tbl", "key", "stamp", "hlc") '
            f'SELECT :user, :tbl, m."key", :stamp, {deleted} FROM {MEMBERS} AS m WHERE {left}',
            values,
        )
        self.connection.execute(f'DELETE FROM {MEMBERS} AS m WHERE {left}', values)
        self.connection.execute(
            f'DELETE FROM {GONE} WHERE "user" = :user AND "tbl" = :tbl AND "key" IN (SELECT "key" FROM {_NOW})', values)
        self.connection.execute(
            f'INSERT OR IGNORE INTO {MEMBERS} ("user", "tbl", "key", "at") SELECT :user, :tbl, "key", :stamp FROM {_NOW}',
            values,
        )

    def page(self, scope: Scope, user: str, since: int, after: tuple[int, str] | None, limit: int | None,
             until: int | None) -> tuple[str, dict[str, object]]:
        """The query (and its parameters) of a page of ``user``'s visible rows to deliver after ``since`` or
        the cursor ``after``: columns as :attr:`TableMapping.select`'s, in the order of the stamp at which
        each is the user's to receive (``"at"``: when it entered the view, or its last_modified if later),
        which the record's ``received_at`` carries."""
        tracked = scope.model.tracked
        stamps = ", ".join(f"s.{quote(name)}" for name in tracked.fields)
        values = ", ".join(f"b.{quote(name)}" for name in tracked.fields)
        where = 'm."at" > :since' if after is None else '(m."at", m."key") > (:at, :key)'
        if until is not None:
            where += ' AND m."at" <= :until'
        sql = (
            f'SELECT m."key", max(s.{S_RECEIVED}, m."at"), {stamps}, {values} FROM {MEMBERS} AS m '
            f'CROSS JOIN {tracked.shadow} AS s ON s.{S_KEY} = m."key" CROSS JOIN {tracked.base} AS b '
            f'ON b.{tracked.key_column} = m."key" WHERE m."user" = :user AND m."tbl" = :tbl AND {where} '
            'ORDER BY m."at", m."key" LIMIT :limit'
        )
        params: dict[str, object] = {"user": user, "tbl": tracked.id, "since": since, "until": until,
                                     "limit": -1 if limit is None else limit}
        if after is not None:
            params["at"], params["key"] = after
        return sql, params

    def gone_since(self, scope: Scope, user: str, since: int, until: int | None) -> dict[str, int]:
        """Rows that left ``user``'s view in the window: key -> the delete's own stamp if it was deleted,
        else the stamp of its leaving."""
        rows = self.connection.execute(
            f'SELECT "key", coalesce("hlc", "stamp") FROM {GONE} WHERE "user" = ? AND "tbl" = ? AND "stamp" > ? AND "stamp" <= ?',
            (user, scope.model.tracked.id, since, HLC_MAX if until is None else until),
        )
        return dict(rows)

    def hidden(self, scope: Scope, user: str, keys: Iterable[str]) -> set[str]:
        """Of ``keys``, those whose row exists and is not ``user``'s to see."""
        tracked: Tracked = scope.model.tracked
        rows = self.connection.execute(
            f"SELECT b.{tracked.key_column} FROM {tracked.base} AS b WHERE b.{tracked.key_column} IN {IN_KEYS} AND NOT EXISTS "
            f'(SELECT 1 FROM {MEMBERS} AS m WHERE m."user" = ? AND m."tbl" = ? AND m."key" = b.{tracked.key_column})',
            (keys_json(keys), user, tracked.id),
        )
        return {key for (key,) in rows}

    def departed(self, scope: Scope, user: str, keys: Iterable[str]) -> dict[str, int]:
        """Of ``keys``, those that left ``user``'s view: key -> the delete their devices were sent."""
        rows = self.connection.execute(
            f'SELECT "key", coalesce("hlc", "stamp") FROM {GONE} WHERE "user" = ? AND "tbl" = ? AND "key" IN {IN_KEYS}',
            (user, scope.model.tracked.id, keys_json(keys)),
        )
        return dict(rows)

    def outside(self, scope: Scope, user: str, keys: Iterable[str], at: int) -> set[str]:
        """Of ``keys`` (rows just written), those the condition does not give ``user``. The others are
        the user's from now on (at ``at``): if they leave the user's view before the user's next request,
        their devices still hear of it."""
        wanted = list(keys)
        inside = {key for (key,) in self.connection.execute(
            f"SELECT k.value FROM json_each(:keys) AS k WHERE k.value IN ({scope.visible})",
            {"user": user, "keys": keys_json(wanted)},
        )}
        self.connection.executemany(
            f'INSERT OR IGNORE INTO {MEMBERS} ("user", "tbl", "key", "at") VALUES (?, ?, ?, ?)',
            [(user, scope.model.tracked.id, key, at) for key in inside],
        )
        return set(wanted) - inside

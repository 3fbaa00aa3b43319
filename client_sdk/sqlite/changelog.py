"""Folding the change log into shadow rows and tombstones, where HLC stamps are assigned.

The triggers only append ``(table, key, changed-field mask, wall time)`` to
``_sync_log``. Folding, done inside a write transaction before any sync state
is read or written, turns the log into stamps with the HLC ``now()`` rule
applied in log order, starting from the persisted clock:

    s[i] = max(physical_ms[i] << 16, s[i-1] + 1),   s[-1] = clock.last

which unrolls to ``s[i] = i + max(clock.last + 1, max(p[j] - j for j <= i))``: one
window-function pass in SQL. As in ``hlc.next_stamp``, stamps never go
backwards, whatever the wall clock does; unlike it, a counter that passes
0xFFFF carries into the millisecond part rather than waiting (SQLite freezes
``'now'`` for a whole statement, so a 100,000-row INSERT shares one wall time).

Every Python-side clock advance folds first, so ``clock.last`` when folding is
what it was when each logged write happened: the stamps are exactly the ones
the triggers would have computed had they read and advanced the clock per row.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

from ..protocol.hlc import COUNTER_MAX, counter_of, system_ms
from .ddl import CLOCK, LOG, S_KEY, S_LM, S_PENDING, TABLES, Tracked
from .schema import quote

FOLD = 'temp."_sync_fold"'
FOLD_KEYS = 'temp."_sync_fold_keys"'

_FOLD_DDL = (
    'CREATE TEMP TABLE IF NOT EXISTS "_sync_fold" ("seq" INTEGER PRIMARY KEY, "tbl" INTEGER NOT NULL, '
    '"key" TEXT NOT NULL, "mask" INTEGER, "more" TEXT, "s" INTEGER NOT NULL)'
)

# r = seq - first numbers the logged events 0, 1, 2... (a fold empties the log; a rollback only removes its tail)
_STAMP = f"""
INSERT INTO {FOLD} ("seq", "tbl", "key", "mask", "more", "s")
SELECT "seq", "tbl", "key", "mask", "more",
       ("seq" - :first) + max(:floor, max(
           (CAST(round(("at" - 2440587.5) * 86400000.0) AS INTEGER) << 16) - ("seq" - :first)
       ) OVER (ORDER BY "seq" ROWS UNBOUNDED PRECEDING))
FROM {LOG} ORDER BY "seq"
"""


def read_registry(connection: sqlite3.Connection) -> dict[str, Tracked]:
    """Every registered table by name, as the triggers in the file were generated."""
    rows = connection.execute(f'SELECT "name", "id", "label", "key", "fields", "sweep" FROM {TABLES}')
    return {
        name: Tracked(id_, name, label, key, tuple(json.loads(fields)), bool(sweep))
        for name, id_, label, key, fields, sweep in rows
    }


def log_is_empty(connection: sqlite3.Connection) -> bool:
    empty: bool = connection.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {LOG})").fetchone()[0] == 1
    return empty


def read_clock(connection: sqlite3.Connection) -> int:
    last: int = connection.execute(f'SELECT "last" FROM {CLOCK}').fetchone()[0]
    return last


def write_clock(connection: sqlite3.Connection, last: int) -> None:
    """Store ``last``; a counter at 0xFFFF is carried so the Python clock's ``now()`` never has to wait it out."""
    if counter_of(last) == COUNTER_MAX:
        last += 1
    connection.execute(f'UPDATE {CLOCK} SET "last" = max("last", ?)', (last,))


def fresh_stamp(connection: sqlite3.Connection) -> int:
    """Issue one stamp from the persisted clock (caller holds the write transaction)."""
    last = read_clock(connection)
    stamp = max(system_ms() << 16, last + 1)
    write_clock(connection, stamp)
    return stamp


def fold(connection: sqlite3.Connection, tables: Iterable[Tracked]) -> None:
    """Fold the whole log; the caller holds a write transaction. ``tables``: the registry."""
    if log_is_empty(connection):
        return
    connection.execute(_FOLD_DDL)
    connection.execute(f"DELETE FROM {FOLD}")
    first = connection.execute(f'SELECT min("seq") FROM {LOG}').fetchone()[0]
    connection.execute(_STAMP, {"first": first, "floor": read_clock(connection) + 1})
    touched = {tbl for (tbl,) in connection.execute(f'SELECT DISTINCT "tbl" FROM {FOLD}')}
    write_clock(connection, connection.execute(f'SELECT max("s") FROM {FOLD}').fetchone()[0])
    for tracked in tables:
        if tracked.id in touched:
            _fold_table(connection, tracked)
            if tracked.sweep:
                sweep_orphans(connection, tracked, fresh_stamp(connection))
    connection.execute(f"DELETE FROM {LOG}")
    connection.execute(f"DELETE FROM {FOLD}")


def _fold_table(connection: sqlite3.Connection, tracked: Tracked) -> None:
    """One table's share of the log: one row per key (in key order), then four set-wise statements."""
    columns = [quote(name) for name in tracked.fields]
    stamps = []
    for index in range(len(tracked.fields)):
        word, bit = tracked.bit(index)
        bits = '"mask"' if word == 0 else f"json_extract(\"more\", '$[{word - 1}]')"
        stamps.append(f'max(CASE WHEN ({bits} >> {bit}) & 1 THEN "s" END)')
    connection.execute(f"DROP TABLE IF EXISTS {FOLD_KEYS}")
    connection.execute(
        'CREATE TEMP TABLE "_sync_fold_keys" ("key" TEXT PRIMARY KEY, "alive" INTEGER NOT NULL, '
        f'"last" INTEGER NOT NULL, "lm" INTEGER, {", ".join(f"{column} INTEGER" for column in columns)}) WITHOUT ROWID'
    )
    # "last": the key's latest event (a tombstone's stamp); "lm" and the stamps: its latest writes
    connection.execute(
        f"""INSERT INTO {FOLD_KEYS} ("key", "alive", "last", "lm", {", ".join(columns)})
        SELECT "key", EXISTS (SELECT 1 FROM {tracked.base} WHERE {tracked.key_column} = f."key"),
               max("s"), max(CASE WHEN "mask" IS NOT NULL THEN "s" END), {", ".join(stamps)}
        FROM {FOLD} AS f WHERE "tbl" = ? GROUP BY "key" ORDER BY "key" """,
        (tracked.id,),
    )
    merged = ", ".join(f"{column} = coalesce(excluded.{column}, {column})" for column in columns)
    # live keys: the new stamps are newer than anything stored, and the row is pending again
    connection.execute(
        f"""INSERT INTO {tracked.shadow} ({S_KEY}, {S_LM}, {S_PENDING}, {", ".join(columns)})
        SELECT "key", "lm", 1, {", ".join(columns)} FROM {FOLD_KEYS} WHERE "alive" AND "lm" IS NOT NULL
        ON CONFLICT ({S_KEY}) DO UPDATE SET {S_LM} = max({S_LM}, excluded.{S_LM}), {S_PENDING} = 1, {merged}"""
    )
    connection.execute(f'DELETE FROM {tracked.tomb} WHERE "key" IN (SELECT "key" FROM {FOLD_KEYS} WHERE "alive")')
    # gone keys: a pending tombstone stamped by the last logged event
    connection.execute(
        f"""INSERT INTO {tracked.tomb} ("key", "stamp", "pending") SELECT "key", "last", 1 FROM {FOLD_KEYS} WHERE NOT "alive"
        ON CONFLICT ("key") DO UPDATE SET "stamp" = max("stamp", excluded."stamp"), "hlc" = NULL, "pending" = 1"""
    )
    for table, column in ((tracked.shadow, S_KEY), (tracked.kept, '"key"')):
        connection.execute(f'DELETE FROM {table} WHERE {column} IN (SELECT "key" FROM {FOLD_KEYS} WHERE NOT "alive")')
    connection.execute(f"DROP TABLE {FOLD_KEYS}")


def sweep_orphans(connection: sqlite3.Connection, tracked: Tracked, stamp: int) -> None:
    """Shadow rows whose base row vanished without a logged delete become pending tombstones.

    That happens when ``REPLACE`` removes a row that clashes on a secondary UNIQUE
    constraint while ``recursive_triggers`` is off, or while triggers were missing.
    O(table): run only for tables with such constraints, or when reconciling.
    """
    gone = f"NOT EXISTS (SELECT 1 FROM {tracked.base} WHERE {tracked.key_column} = s.{S_KEY})"
    connection.execute(
        f"""INSERT INTO {tracked.tomb} ("key", "stamp", "pending") SELECT s.{S_KEY}, ?, 1 FROM {tracked.shadow} AS s WHERE {gone}
        ON CONFLICT ("key") DO UPDATE SET "stamp" = max("stamp", excluded."stamp"), "hlc" = NULL, "pending" = 1""",
        (stamp,),
    )
    connection.execute(f"DELETE FROM {tracked.shadow} AS s WHERE {gone}")
    connection.execute(f'DELETE FROM {tracked.kept} WHERE "key" NOT IN (SELECT {S_KEY} FROM {tracked.shadow})')


def backfill(connection: sqlite3.Connection, tracked: Tracked, stamp: int) -> None:
    """Rows without a shadow row (present before tracking, or written while triggers were missing)
    are stamped as inserts: every field at ``stamp``, pending."""
    columns = ", ".join(quote(name) for name in tracked.fields)
    stamps = ", ".join(":stamp" for _ in tracked.fields)
    connection.execute(
        f"""INSERT INTO {tracked.shadow} ({S_KEY}, {S_LM}, {S_PENDING}, {columns})
        SELECT b.{tracked.key_column}, :stamp, 1, {stamps} FROM {tracked.base} AS b
        WHERE NOT EXISTS (SELECT 1 FROM {tracked.shadow} WHERE {S_KEY} = b.{tracked.key_column})""",
        {"stamp": stamp},
    )
    connection.execute(
        f'DELETE FROM {tracked.tomb} WHERE EXISTS '
        f'(SELECT 1 FROM {tracked.base} WHERE {tracked.key_column} = {tracked.tomb}."key")'
    )


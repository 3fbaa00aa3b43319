"""The SQL objects sync keeps beside the user's tables, and the change-capture triggers.

Capture is split in two so that the app's write path stays cheap:

1. AFTER INSERT / UPDATE / DELETE triggers append one row per written record
   to a change log (``_sync_log``): the table, the key, a bit mask of the
   fields that changed (``NULL`` for a delete) and the wall clock of the write
   (``julianday('now')``). Nothing else: no clock row to update, no shadow row
   to find, no index to maintain. An UPDATE that changes nothing logs nothing.
2. Before sync state is read or written, the log is *folded* (``changelog.py``)
   into the per-table shadow table (one row per record, one stamp column per
   field, ``last_modified`` and the pending mark) and the tombstone table; the
   HLC stamps are assigned there, in log order, with the HLC ``now()`` rule.

Writes made by sync itself are not logged: while sync writes a page, the
keys it writes sit in ``_sync_unlogged`` as ranges of one key each, and the
triggers' WHEN skips a row whose key falls in a range of its table. Rows that
other rows' foreign-key actions or the app's own triggers change meanwhile are
still logged. Where nothing but sync's own statement can write a table while
it upserts a page (no trigger of the app's on it, no secondary UNIQUE
constraint), one range without an end covers the whole table instead, which
spares writing and deleting a row per key. Either
way the WHEN reads one entry: the range that starts last at or before the key.
(``_sync_applying``, the per-key list earlier versions kept, stays in their
files, empty, for the triggers they made.)
"""

from __future__ import annotations

from dataclasses import dataclass

from .schema import PREFIX, quote

WORD_BITS = 63
"""Fields per mask word: bit ``i % 63`` of word ``i // 63`` marks field ``i``. Word 0 is the log's ``mask``;
a table with more than 63 fields keeps the further words in ``more``, a JSON array."""

JULIAN_NOW = "julianday('now')"

_GLOBAL_SQL = f"""
CREATE TABLE IF NOT EXISTS "{PREFIX}meta" ("name" TEXT PRIMARY KEY, "value") WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS "{PREFIX}clock" ("id" INTEGER PRIMARY KEY CHECK ("id" = 0), "last" INTEGER NOT NULL);
INSERT OR IGNORE INTO "{PREFIX}clock" ("id", "last") VALUES (0, 0);
CREATE TABLE IF NOT EXISTS "{PREFIX}tables" (
    "name" TEXT PRIMARY KEY, "id" INTEGER NOT NULL UNIQUE, "label" TEXT NOT NULL,
    "key" TEXT NOT NULL, "fields" TEXT NOT NULL, "sweep" INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS "{PREFIX}log" (
    "seq" INTEGER PRIMARY KEY, "tbl" INTEGER NOT NULL, "key" TEXT NOT NULL,
    "mask" INTEGER, "more" TEXT, "at" REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS "{PREFIX}unlogged" (
    "tbl" INTEGER NOT NULL, "key" TEXT NOT NULL, "through" TEXT, PRIMARY KEY ("tbl", "key")
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS "{PREFIX}lock" (
    "id" INTEGER PRIMARY KEY CHECK ("id" = 0), "token" TEXT NOT NULL, "pid" INTEGER NOT NULL,
    "started" TEXT, "host" TEXT NOT NULL, "acquired_at" REAL NOT NULL, "updated_at" REAL NOT NULL, "phase" TEXT NOT NULL
);
"""
GLOBAL_DDL = tuple(statement.strip() for statement in _GLOBAL_SQL.split(";") if statement.strip())
"""The file-wide objects, one statement each (``executescript`` would commit the caller's transaction)."""

META = quote(f"{PREFIX}meta")
CLOCK = quote(f"{PREFIX}clock")
TABLES = quote(f"{PREFIX}tables")
LOG = quote(f"{PREFIX}log")
UNLOGGED = quote(f"{PREFIX}unlogged")
"""Ranges of keys, from ``key`` through ``through`` (NULL: no end), whose writes the triggers do not log."""
LOCK = quote(f"{PREFIX}lock")

# Meta columns of a shadow table; user columns may not use the prefix, so they never clash with stamp columns.
S_KEY = quote(f"{PREFIX}key")
S_LM = quote(f"{PREFIX}lm")
S_RECEIVED = quote(f"{PREFIX}received_at")
S_PENDING = quote(f"{PREFIX}pending")


@dataclass(frozen=True)
class Tracked:
    """A tracked table as registered in ``_sync_tables``: what the triggers and the fold agree on."""

    id: int
    table: str
    label: str
    key: str
    fields: tuple[str, ...]
    """Field order fixes the mask bits; the key is one of the fields."""
    sweep: bool
    """Secondary UNIQUE constraints exist: a REPLACE may delete other rows without firing DELETE triggers."""

    def name(self, kind: str) -> str:
        """Unquoted name of this table's object of ``kind``.

        Kinds hold no underscore, so objects of different kinds or tables never share a name.
        """
        return f"{PREFIX}{kind}_{self.table}"

    @property
    def base(self) -> str:
        return quote(self.table)

    @property
    def key_column(self) -> str:
        return quote(self.key)

    @property
    def shadow(self) -> str:
        return quote(self.name("shadow"))

    @property
    def tomb(self) -> str:
        return quote(self.name("tomb"))

    @property
    def kept(self) -> str:
        return quote(self.name("kept"))

    @property
    def held(self) -> str:
        return quote(self.name("held"))

    def trigger_names(self) -> dict[str, str]:
        """Unquoted trigger names by kind."""
        return {kind: self.name(kind) for kind in ("insert", "update", "rekey", "delete")}

    def object_names(self) -> list[tuple[str, str]]:
        """(type, unquoted name) of every per-table object, for dropping them all."""
        names = [("trigger", name) for name in self.trigger_names().values()]
        return names + [("table", self.name(kind)) for kind in ("shadow", "tomb", "kept", "held")]

    @property
    def words(self) -> int:
        return (len(self.fields) + WORD_BITS - 1) // WORD_BITS

    def bit(self, index: int) -> tuple[int, int]:
        """(word, bit) of field ``index``."""
        return divmod(index, WORD_BITS)


TOMB_HLC = 'coalesce("hlc", "stamp")'
"""A tombstone's own stamp: the HLC of the delete itself, which decides against writes. ``"stamp"``
orders delivery; on a server it is when the tombstone was stored, and ``"hlc"`` keeps the delete's
own stamp when that is older (NULL: the same as ``"stamp"``, as it always is on a client). A server
also keeps in ``"row"`` what the delete erased, as a record's JSON (see ``join_fields``)."""


def storage_ddl(tracked: Tracked, role: str) -> list[str]:
    """The shadow and tombstone tables and the indexes the role's queries use."""
    stamps = "".join(f", {quote(name)} INTEGER DEFAULT 0" for name in tracked.fields)
    statements = [
        f"CREATE TABLE IF NOT EXISTS {tracked.shadow} ({S_KEY} TEXT PRIMARY KEY, {S_LM} INTEGER NOT NULL, "
        f"{S_RECEIVED} INTEGER NOT NULL DEFAULT 0, {S_PENDING} INTEGER NOT NULL DEFAULT 0{stamps}) WITHOUT ROWID",
        f'CREATE TABLE IF NOT EXISTS {tracked.tomb} ("key" TEXT PRIMARY KEY, "stamp" INTEGER NOT NULL, '
        f'"pending" INTEGER NOT NULL, "hlc" INTEGER, "row" TEXT) WITHOUT ROWID',
        # A client's: fields received for a row that the table has no column for (yet), as JSON
        # objects of value and of stamp by field name (a server refuses such fields instead).
        f'CREATE TABLE IF NOT EXISTS {tracked.kept} ("key" TEXT PRIMARY KEY, "data" TEXT NOT NULL, '
        '"stamps" TEXT NOT NULL) WITHOUT ROWID',
        # A client's: received records the table refused (a constraint), as the record's JSON with
        # SQLite's reason, until they apply.
        f'CREATE TABLE IF NOT EXISTS {tracked.held} ("key" TEXT PRIMARY KEY, "record" TEXT NOT NULL, '
        '"reason" TEXT NOT NULL) WITHOUT ROWID',
    ]
    if role == "server":
        # get_changed_since / get_deletes_since: a page costs O(page)
        statements += [
            f"CREATE INDEX IF NOT EXISTS {quote(tracked.name('lm'))} ON {tracked.shadow} ({S_LM}, {S_KEY})",
            f'CREATE INDEX IF NOT EXISTS {quote(tracked.name("tstamp"))} ON {tracked.tomb} ("stamp")',
        ]
    else:
        # get_pending / get_pending_deletes: partial indexes hold only what is still to push
        statements += [
            f"CREATE INDEX IF NOT EXISTS {quote(tracked.name('pending'))} ON {tracked.shadow} ({S_LM}, {S_KEY}) "
            f"WHERE {S_PENDING} = 1",
            f'CREATE INDEX IF NOT EXISTS {quote(tracked.name("tpending"))} ON {tracked.tomb} ("stamp") WHERE "pending" = 1',
        ]
    return statements


def trigger_ddl(tracked: Tracked) -> dict[str, str]:
    """CREATE TRIGGER statements by unquoted trigger name, exactly as SQLite will store them.

    Each written record appends one log row: ``mask`` (and ``more``) mark the
    changed fields, all of them for an insert; ``mask`` is NULL for a delete.
    """
    names = tracked.trigger_names()
    key = tracked.key_column
    columns = '("tbl", "key", "mask", "more", "at")'

    def not_applying(ref: str) -> str:
        """No range of ``_sync_unlogged`` holds the key: the one starting last at or before it ends before it."""
        return (f'coalesce((SELECT "through" IS NOT NULL AND "through" < {ref}.{key} FROM {UNLOGGED} '
                f'WHERE "tbl" = {tracked.id} AND "key" <= {ref}.{key} ORDER BY "key" DESC LIMIT 1), 1)')

    def row(ref: str, masks: list[str]) -> str:
        more = f"json_array({', '.join(masks[1:])})" if len(masks) > 1 else "NULL"
        return f"({tracked.id}, {ref}.{key}, {masks[0]}, {more}, {JULIAN_NOW})"

    # a row without its key cannot be synced: say so in the app's terms, not the change log's
    refusal = f"{tracked.table}.{tracked.key} may not be NULL: a synced row needs its key".replace("'", "''")
    keyless = f"  SELECT RAISE(ABORT, '{refusal}') WHERE NEW.{key} IS NULL;\n"
    every = row("NEW", ["-1"] * tracked.words)
    gone = f"({tracked.id}, OLD.{key}, NULL, NULL, {JULIAN_NOW})"
    out = {
        names["insert"]: (
            f"CREATE TRIGGER {quote(names['insert'])} AFTER INSERT ON {tracked.base}\n"
            f"WHEN {not_applying('NEW')}\nBEGIN\n{keyless}  INSERT INTO {LOG} {columns} VALUES {every};\nEND"
        ),
        names["rekey"]: (
            f"CREATE TRIGGER {quote(names['rekey'])} AFTER UPDATE OF {key} ON {tracked.base}\n"
            f"WHEN OLD.{key} IS NOT NEW.{key} COLLATE BINARY\nBEGIN\n{keyless}"
            f"  INSERT INTO {LOG} {columns} VALUES {gone}, {every};\nEND"
        ),
        names["delete"]: (
            f"CREATE TRIGGER {quote(names['delete'])} AFTER DELETE ON {tracked.base}\n"
            f"WHEN {not_applying('OLD')}\nBEGIN\n  INSERT INTO {LOG} {columns} VALUES {gone};\nEND"
        ),
    }
    values = [(index, quote(name)) for index, name in enumerate(tracked.fields) if name != tracked.key]
    if values:
        changed = " OR ".join(f"OLD.{col} IS NOT NEW.{col} COLLATE BINARY" for _, col in values)
        masks = []
        for word in range(tracked.words):
            bits = [
                f"((OLD.{col} IS NOT NEW.{col} COLLATE BINARY) << {tracked.bit(index)[1]})"
                for index, col in values
                if tracked.bit(index)[0] == word
            ]
            masks.append(" | ".join(bits) or "0")
        out[names["update"]] = (
            f"CREATE TRIGGER {quote(names['update'])} AFTER UPDATE ON {tracked.base}\n"
            f"WHEN OLD.{key} IS NEW.{key} COLLATE BINARY AND ({changed}) AND {not_applying('NEW')}\nBEGIN\n"
            f"  INSERT INTO {LOG} {columns} VALUES {row('NEW', masks)};\nEND"
        )
    return out

"""Bringing the server database's schema up to the config's: additive changes only.

The config's schema is first run into an in-memory database, which checks every statement and
tells what each one creates. Every table of it that the file already holds is compared with the
file's by ``PRAGMA table_info``: a new column that is nullable or has a constant DEFAULT is added
with ``ALTER TABLE ... ADD COLUMN`` and its definition as the config writes it. Then the statements
whose objects the file lacks run: new tables, with their indexes and triggers. Anything else (a
column removed, renamed or redefined, another primary key, a mapped table the schema no longer
creates) would need a table rebuild or values the server does not have, so it is refused, saying
what to do. All of it is one transaction: a refusal leaves the file as it was.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from client_sdk.errors import InvalidParameterError
from client_sdk.sqlite.schema import quote

from .config import ServerConfig

log = logging.getLogger("server_stub")

MIGRATE = "the server applies additive changes only: migrate the database yourself (ALTER TABLE ...), then start again"
ADDABLE = "add it as a nullable column or with a constant DEFAULT"

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_QUOTES = {"'": "'", '"': '"', "`": "`", "[": "]"}
_TABLE_CONSTRAINTS = {"constraint", "primary", "unique", "check", "foreign"}
_NAME_END = re.compile(r"[\s(),/-]")


@dataclass(frozen=True)
class Column:
    """One row of ``PRAGMA table_info``."""

    name: str
    type: str
    not_null: bool
    default: str | None
    """The DEFAULT's SQL text as written, None without one."""
    key: int
    """Position in the primary key (from 1), 0 outside it."""

    def shape(self) -> tuple[str, bool, str | None]:
        """What must not change: the declared type (in any case and spacing), NOT NULL and the DEFAULT."""
        return " ".join(self.type.upper().split()), self.not_null, self.default

    def describe(self) -> str:
        parts = [self.type or "(no type)", "NOT NULL" if self.not_null else "",
                 "" if self.default is None else f"DEFAULT {self.default}"]
        return " ".join(part for part in parts if part)


@dataclass(frozen=True)
class Statement:
    """One statement of the config's schema and the objects (type, name) it created in memory."""

    sql: str
    creates: tuple[tuple[str, str], ...]


def create_schema(config: ServerConfig) -> None:
    """Create the configured schema in a new database, or bring an existing one up to it.

    All of it or nothing: a change that is not additive, or a statement SQLite refuses, raises
    ``InvalidParameterError`` saying which and what to do, with nothing changed and, if this call
    created the database file, no file left behind. Logs one INFO line per object created or column added.
    """
    if not isinstance(config.database, Path):
        raise InvalidParameterError("create_schema brings a SQLite file up to its schema; PostgreSQL's is made by its storage")
    if not config.schema.strip():
        return
    reference, statements = _run_in_memory(config.schema)
    created = not config.database.exists()
    try:
        try:
            done = _bring_up(config.database, reference, statements, config.models)
        except sqlite3.Error as exc:  # no such folder, no permission, not a database, a full disk
            raise InvalidParameterError(f"database {config.database}: cannot open or write it: {exc}") from None
    except InvalidParameterError:
        if created:
            config.database.unlink(missing_ok=True)
        raise
    finally:
        reference.close()
    for change in done:
        log.info("schema: %s", change)


def _run_in_memory(script: str) -> tuple[sqlite3.Connection, list[Statement]]:
    """The config's schema in a new in-memory database, and what each of its statements created there."""
    connection = sqlite3.connect(":memory:", isolation_level=None)
    statements = []
    try:
        for sql in schema_statements(script):
            before = _objects(connection)
            _execute(connection, sql)
            statements.append(Statement(sql, tuple(made for key, made in _objects(connection).items() if key not in before)))
    except BaseException:
        connection.close()
        raise
    return connection, statements


def _bring_up(path: Path, reference: sqlite3.Connection, statements: list[Statement], models: Mapping[str, str]) -> list[str]:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            done = _apply(connection, reference, statements, models)
        except BaseException:
            if connection.in_transaction:  # SQLite ends it itself on some errors (a full disk)
                connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return done
    finally:
        connection.close()


def _apply(connection: sqlite3.Connection, reference: sqlite3.Connection, statements: list[Statement],
           models: Mapping[str, str]) -> list[str]:
    """Check every table first, then add the new columns and run the statements of new objects; what was done."""
    existing, in_file, wanted = _objects(connection), _tables(connection), _tables(reference)
    _check_mapped(models, wanted, existing)
    kept = [name for key, name in wanted.items() if key in in_file]
    additions = [(table, name, definition) for table in kept for name, definition in _additions(connection, reference, table)]
    done = [_add_column(connection, table, name, definition) for table, name, definition in additions]
    fresh = not any(_fold(name) in existing for statement in statements for _, name in statement.creates)
    for statement in statements:
        if _is_new(statement, existing, fresh):
            _execute(connection, statement.sql)
            done += [f"created {kind} {name}" for kind, name in statement.creates]
    return done


def _is_new(statement: Statement, existing: Mapping[str, object], fresh: bool) -> bool:
    """Whether ``statement`` is still to run: the file lacks what it creates. One that creates nothing
    (an INSERT, a PRAGMA) runs only with the rest of a new database's schema."""
    if not statement.creates:
        return fresh
    return not any(_fold(name) in existing for _, name in statement.creates)


def _check_mapped(models: Mapping[str, str], wanted: Mapping[str, str], existing: Mapping[str, tuple[str, str]]) -> None:
    for table in models:
        if _fold(table) in existing and _fold(table) not in wanted:
            raise InvalidParameterError(
                f"schema: table {table} is in [models] and in the database, but the schema no longer creates it: "
                f"put its CREATE TABLE back in the schema, or take it out of [models]")


def _additions(connection: sqlite3.Connection, reference: sqlite3.Connection, table: str) -> list[tuple[str, str]]:
    """(name, definition as the config writes it) of each column to add to ``table``; refuses any other change."""
    have, want = _columns(connection, table), _columns(reference, table)
    for key, column in have.items():
        if key not in want:
            raise InvalidParameterError(f"schema: {table}.{column.name} is in the database but not in the schema "
                                        f"(removed or renamed): {MIGRATE}")
    old_key, new_key = _primary_key(have), _primary_key(want)
    if list(map(_fold, old_key)) != list(map(_fold, new_key)):
        raise InvalidParameterError(f"schema: {table}: the PRIMARY KEY is ({', '.join(old_key)}) in the database "
                                    f"but ({', '.join(new_key)}) in the schema: {MIGRATE}")
    for key, column in want.items():
        if key in have and have[key].shape() != column.shape():
            raise InvalidParameterError(f"schema: {table}.{column.name} is {have[key].describe()} in the database "
                                        f"but {column.describe()} in the schema: {MIGRATE}")
    new = [column for key, column in want.items() if key not in have]
    for column in new:
        if column.not_null and column.default is None:
            raise InvalidParameterError(f"schema: {table}.{column.name} is a new NOT NULL column without a DEFAULT, "
                                        f"which the rows already stored cannot have: {ADDABLE}")
    definitions = _column_definitions(_create_statement(reference, table))
    return [(column.name, _definition(definitions, table, column.name)) for column in new]


def _definition(definitions: Mapping[str, str], table: str, name: str) -> str:
    definition = definitions.get(_fold(name))
    if definition is None:  # e.g. CREATE TABLE ... AS SELECT
        raise InvalidParameterError(f"schema: {table}.{name} is new, but its definition cannot be read from the schema's "
                                    f"CREATE TABLE: {MIGRATE}")
    return definition


def _add_column(connection: sqlite3.Connection, table: str, name: str, definition: str) -> str:
    statement = f"ALTER TABLE {quote(table)} ADD COLUMN {definition}"
    try:
        connection.execute(statement)
    except sqlite3.Error as exc:  # a non-constant DEFAULT, UNIQUE, ...
        raise InvalidParameterError(f"schema: cannot add {table}.{name}: SQLite refused {statement!r}: {exc}; {ADDABLE}") from exc
    return f"added column {table}.{name}"


def _execute(connection: sqlite3.Connection, statement: str) -> None:
    try:
        connection.execute(statement)
    except sqlite3.Error as exc:
        raise InvalidParameterError(f"schema: SQLite refused {statement!r}: {exc}") from exc


def _tables(connection: sqlite3.Connection) -> dict[str, str]:
    return {key: name for key, (kind, name) in _objects(connection).items() if kind == "table"}


def _objects(connection: sqlite3.Connection) -> dict[str, tuple[str, str]]:
    """Folded name -> (type, name) of the tables, indexes, triggers and views someone wrote (not SQLite's own)."""
    rows = connection.execute("SELECT type, name FROM sqlite_master"
                              " WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")
    return {_fold(name): (kind, name) for kind, name in rows}


def _columns(connection: sqlite3.Connection, table: str) -> dict[str, Column]:
    """Folded name -> column, in table order."""
    rows = connection.execute('SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(?)', (table,))
    return {_fold(name): Column(name, kind, bool(not_null), default, key) for name, kind, not_null, default, key in rows}


def _primary_key(table: Mapping[str, Column]) -> tuple[str, ...]:
    return tuple(column.name for column in sorted(table.values(), key=lambda column: column.key) if column.key)


def _fold(name: str) -> str:
    """A name as SQLite compares names: ASCII letters in any case are the same, other characters are not."""
    return name.translate(_ASCII_LOWER)


def schema_statements(script: str) -> list[str]:
    """The statements of a SQL script, each whole (semicolons inside strings or triggers do not split one)."""
    statements, start = [], 0
    for end, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start:end + 1]):
            statements.append(script[start:end + 1].strip())
            start = end + 1
    statements.append(script[start:].strip())
    return [statement for statement in statements if statement.rstrip(";").strip()]


# -- the column definitions of a CREATE TABLE statement, as written --

def _create_statement(connection: sqlite3.Connection, table: str) -> str:
    row = connection.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    return str(row[0])


def _column_definitions(create_table: str) -> dict[str, str]:
    """Folded column name -> the column's definition as written, without the spaces and comments around it
    (SQLite appends an added column's text to the table's stored statement: a comment at its end would swallow the ')')."""
    definitions: dict[str, str] = {}
    for item in _column_list(create_table):
        definition = _trim(item)
        name, quoted = _leading_name(definition)
        if quoted or name.lower() not in _TABLE_CONSTRAINTS:
            definitions.setdefault(_fold(name), definition)
    return definitions


def _column_list(sql: str) -> Iterator[str]:
    """The comma-separated items between the outer parentheses of a CREATE TABLE statement."""
    depth, start, at = 0, 0, 0
    while at < len(sql):
        char = sql[at]
        if char == "(":
            depth += 1
            start = at + 1 if depth == 1 else start
        elif char == ")":
            depth -= 1
            if depth == 0:
                yield sql[start:at]
                return
        elif char == "," and depth == 1:
            yield sql[start:at]
            start = at + 1
        at = _skip(sql, at)


def _trim(item: str) -> str:
    """``item`` without the spaces and comments before and after it."""
    start, end, at = -1, 0, 0
    while at < len(item):
        after = _skip(item, at)
        if not (item[at].isspace() or _is_comment(item, at)):
            start = at if start < 0 else start
            end = after
        at = after
    return item[max(start, 0):end]


def _leading_name(definition: str) -> tuple[str, bool]:
    """The name ``definition`` starts with, unquoted, and whether it was quoted."""
    if definition[:1] in _QUOTES:
        close = _QUOTES[definition[0]]
        return definition[1:_skip(definition, 0) - 1].replace(close * 2, close), True
    return _NAME_END.split(definition, maxsplit=1)[0], False


def _skip(sql: str, at: int) -> int:
    """Where the token starting at ``at`` ends: a quoted name or string and a comment whole, else one character."""
    if sql.startswith("--", at):
        end = sql.find("\n", at)
        return len(sql) if end < 0 else end + 1
    if sql.startswith("/*", at):
        end = sql.find("*/", at + 2)
        return len(sql) if end < 0 else end + 2
    if sql[at] not in _QUOTES:
        return at + 1
    close = _QUOTES[sql[at]]
    end = sql.find(close, at + 1)
    while end >= 0 and close != "]" and sql.startswith(close, end + 1):  # a doubled quote is part of the text
        end = sql.find(close, end + 2)
    return len(sql) if end < 0 else end + 1


def _is_comment(sql: str, at: int) -> bool:
    return sql.startswith(("--", "/*"), at)

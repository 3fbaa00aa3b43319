"""The server's TOML configuration (see ``example.toml``).

Paths in the file are relative to the file's own folder. Unknown keys are
refused, so a typo cannot silently switch a limit or the auth off.

Scoped sync (issue #17): a token given as a table, ``{ user = "alice", nodes =
[...] }``, syncs as that user, and ``[scopes]`` maps a table to an SQL condition
on its rows in which ``:user`` is that user (always bound, never formatted in).
A table with no entry in ``[scopes]`` is visible to every user, and a token in
the old list form has no user: it sees every row of every table. ``[scopes]``
without any token that has a user is therefore allowed (every token sees
everything); the conditions are still checked against the database at start-up.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client_sdk.errors import InvalidParameterError, require
from client_sdk.protocol.limits import BODY_BYTES_MAX

from .postgres.connection import is_postgres_url

DEFAULT_REQUEST_BYTES_MAX = BODY_BYTES_MAX
DEFAULT_BATCH_SIZE = 2000
"""Records per response page: big enough for few rounds, small enough that a client parses a page in little memory."""
DEFAULT_RECORDS_PER_MODEL_MAX = 5000
"""Records and deletes of one model in one request (PROTOCOL.md section 12); the SDK pushes 5,000 at most."""
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0

_TOP_KEYS = {"database", "schema", "schema_file", "node_id", "models", "auth", "limits", "scopes"}
_TOKEN_KEYS = {"user", "nodes"}
_LIMIT_KEYS = {"request_bytes_max", "records_per_model_max", "batch_size", "clock_drift_max", "tombstone_retention_days",
               "header_timeout", "body_timeout"}


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``create_app`` needs. ``tokens`` maps bearer token -> node ids it may sync as;
    empty means no auth. ``users`` maps a token to the user it syncs as (tokens left out have none: they see
    every row), and ``scopes`` maps a table of ``models`` to an SQL condition on its rows, ``:user`` being
    that user; a table without one is visible to every user. ``clock_drift_max=None`` disables the drift
    check. ``header_timeout`` and ``body_timeout`` (seconds) bound how long a client may take to send a
    request's head and its body."""

    database: Path | str
    """A SQLite file, or a PostgreSQL database's ``postgresql://`` URL."""
    models: Mapping[str, str]
    schema: str = ""
    node_id: str | None = None
    tokens: Mapping[str, frozenset[str]] = field(default_factory=dict)
    users: Mapping[str, str] = field(default_factory=dict)
    scopes: Mapping[str, str] = field(default_factory=dict)
    request_bytes_max: int = DEFAULT_REQUEST_BYTES_MAX
    batch_size: int | None = DEFAULT_BATCH_SIZE
    clock_drift_max: int | None = 300
    tombstone_retention_days: int | None = None
    records_per_model_max: int = DEFAULT_RECORDS_PER_MODEL_MAX
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT

    def __post_init__(self) -> None:
        require(isinstance(self.database, Path) or (isinstance(self.database, str) and is_postgres_url(self.database)),
                "database must be a SQLite file's path or a postgresql:// URL")
        require(isinstance(self.models, Mapping) and bool(self.models), "models must map at least one table to a model label")
        for table, label in self.models.items():
            require(_text(table) and _text(label), f"models: {table!r} = {label!r} must both be non-empty strings")
        require(len(set(self.models.values())) == len(self.models), "models: two tables map to the same label")
        require(isinstance(self.schema, str), "schema must be SQL text")
        require(self.node_id is None or _text(self.node_id), "node_id must be a non-empty string")
        require(isinstance(self.tokens, Mapping), "auth.tokens must map token -> list of node ids")
        for token, nodes in self.tokens.items():
            require(_text(token) and token.isascii() and token.isprintable() and " " not in token,
                     "auth.tokens: a token must be a non-empty ASCII string without spaces")
            require(isinstance(nodes, frozenset) and all(_text(node) for node in nodes),
                     f"auth.tokens: the node ids of a token must be non-empty strings, got {sorted(nodes, key=repr)!r}")
        require(isinstance(self.users, Mapping), "users must map token -> user")
        for token, user in self.users.items():  # the token itself is never echoed: error text ends up in logs
            require(token in self.tokens, "users: every token with a user must be one of auth.tokens")
            require(_text(user), f"auth.tokens: a token's user must be a non-empty string, got {user!r}")
        require(isinstance(self.scopes, Mapping), "scopes must map table -> SQL condition")
        for table, condition in self.scopes.items():
            require(table in self.models, f"scopes.{table}: {table!r} is not a table of [models]"
                                          + _did_you_mean(table, set(self.models), "scopes."))
            require(isinstance(condition, str) and bool(condition.strip()),
                    f"scopes.{table}: the condition must be a non-empty string of SQL, got {condition!r}")
        require(_int(self.request_bytes_max) and self.request_bytes_max > 0,
                "limits.request_bytes_max must be a positive integer")
        require(self.batch_size is None or (_int(self.batch_size) and self.batch_size > 0),
                 "limits.batch_size must be a positive integer")
        require(self.clock_drift_max is None or (_int(self.clock_drift_max) and self.clock_drift_max >= 0),
                 "limits.clock_drift_max must be a non-negative integer (seconds), or false to disable the check")
        retention = self.tombstone_retention_days
        require(retention is None or (_int(retention) and retention > 0),
                "limits.tombstone_retention_days must be a positive integer")
        require(_int(self.records_per_model_max) and self.records_per_model_max > 0,
                 "limits.records_per_model_max must be a positive integer")
        for name in ("header_timeout", "body_timeout"):
            require(_seconds(getattr(self, name)), f"limits.{name} must be a positive number of seconds")

    @property
    def auth_required(self) -> bool:
        return bool(self.tokens)


def load_config(path: str | Path) -> ServerConfig:
    """Read and validate a TOML config file; raises :class:`InvalidParameterError` naming the problem."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidParameterError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidParameterError(f"config {path} is not valid TOML: {exc}") from exc
    return config_from_dict(raw, base=path.parent)


def config_from_dict(raw: dict[str, Any], base: Path) -> ServerConfig:
    """Build a config from parsed TOML; relative paths are taken from ``base``."""
    _known(raw, _TOP_KEYS, "")
    database = raw.get("database")
    require(_text(database), "database: a SQLite file's path or a postgresql://user@host:port/dbname URL is required")
    schema = raw.get("schema", "")
    schema_file = raw.get("schema_file")
    require(not (schema and schema_file), "give the schema either inline (schema) or as a file (schema_file), not both")
    if schema_file is not None:
        require(_text(schema_file), "schema_file must be a path")
        try:
            schema = (base / schema_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidParameterError(f"cannot read schema_file {schema_file}: {exc.strerror or exc}") from exc
    models = raw.get("models")
    require(isinstance(models, dict), "[models] is required: table = \"app.Model\"")
    auth = raw.get("auth", {})
    require(isinstance(auth, dict), "[auth] must be a table")
    _known(auth, {"tokens"}, "auth.")
    tokens = auth.get("tokens", {})
    require(isinstance(tokens, dict),
            "[auth.tokens] must map token = [\"node-id\", ...] or token = { user = \"name\", nodes = [\"node-id\", ...] }")
    grants = {token: _grant(entry, number) for number, (token, entry) in enumerate(tokens.items(), start=1)}
    scopes = raw.get("scopes", {})
    require(isinstance(scopes, dict), "[scopes] must map table = \"SQL condition on its rows, :user being the token's user\"")
    limits = raw.get("limits", {})
    require(isinstance(limits, dict), "[limits] must be a table")
    _known(limits, _LIMIT_KEYS, "limits.")
    drift = limits.get("clock_drift_max", 300)
    require(drift is not True, "limits.clock_drift_max: use a number of seconds, or false to disable")
    return ServerConfig(
        database=database if is_postgres_url(database) else base / database,
        models=dict(models),
        schema=schema,
        node_id=raw.get("node_id"),
        tokens={token: frozenset(nodes) for token, (_, nodes) in grants.items()},
        users={token: user for token, (user, _) in grants.items() if user is not None},
        scopes=dict(scopes),
        request_bytes_max=limits.get("request_bytes_max", DEFAULT_REQUEST_BYTES_MAX),
        batch_size=limits.get("batch_size", DEFAULT_BATCH_SIZE),
        clock_drift_max=None if drift is False else drift,
        tombstone_retention_days=limits.get("tombstone_retention_days"),
        records_per_model_max=limits.get("records_per_model_max", DEFAULT_RECORDS_PER_MODEL_MAX),
        header_timeout=limits.get("header_timeout", DEFAULT_HEADER_TIMEOUT),
        body_timeout=limits.get("body_timeout", DEFAULT_BODY_TIMEOUT),
    )


def _grant(entry: object, number: int) -> tuple[str | None, list[str]]:
    """``(user, node ids)`` of one ``[auth.tokens]`` entry: a list of node ids (no user), or a table
    ``{ user = "...", nodes = [...] }``. Errors say which entry by its place, never by the token (a secret)."""
    if isinstance(entry, dict):
        where = f"auth.tokens: token #{number} (a table)"
        _known(entry, _TOKEN_KEYS, "", where=f"{where}: ")
        user: Any = entry.get("user")
        require(_text(user), f"{where}: user must be a non-empty string, got {user!r}")
        where = f"auth.tokens: the token of user {user!r}"
        nodes: Any = entry.get("nodes")
        require(isinstance(nodes, list) and all(_text(node) for node in nodes),
                f"{where}: nodes must be a list of node ids (non-empty strings), got {nodes!r}")
        return user, nodes
    if isinstance(entry, list) and all(_text(node) for node in entry):
        return None, entry
    raise InvalidParameterError(f"auth.tokens: each token maps to a list of node ids (non-empty strings) or to a table "
                                f"{{ user = \"name\", nodes = [...] }}, got {entry!r}")


def _known(table: dict[str, Any], allowed: set[str], prefix: str, where: str = "") -> None:
    unknown = sorted(set(table) - allowed)
    require(not unknown, where + "unknown config key(s): " + ", ".join(prefix + key + _did_you_mean(key, allowed, prefix)
                                                                      for key in unknown))


def _did_you_mean(key: str, allowed: set[str], prefix: str) -> str:
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    return f" (did you mean {prefix + close[0]}?)" if close else ""


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _seconds(value: object) -> bool:
    return (_int(value) or isinstance(value, float)) and 0 < value < math.inf  # type: ignore[operator]

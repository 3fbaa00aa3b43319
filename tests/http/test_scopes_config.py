"""Scoped sync's server configuration (issue #17): tokens with a user, ``[scopes]``, and their checks."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from client_sdk import HybridLogicalClock, InvalidParameterError, ModelPayload, SyncManifest, SyncRecord
from server_stub import ServerConfig, create_app, load_config
from server_stub.reading import OPEN, Grant, Refusal, authorize
from tests.loopback import serve
from tests.serverdb import Database, server_query

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = """
CREATE TABLE todo_lists (id TEXT PRIMARY KEY, owner TEXT, name TEXT);
CREATE TABLE list_members (list_id TEXT, user_id TEXT, PRIMARY KEY (list_id, user_id));
CREATE TABLE tasks (id TEXT PRIMARY KEY, list_id TEXT REFERENCES todo_lists (id), title TEXT);
"""


def head(database: Database) -> str:
    """A config's first lines: ``database``, the schema and the models."""
    return f'database = "{database}"\nschema = """{SCHEMA}"""\n[models]\ntodo_lists = "todo.List"\ntasks = "todo.Task"\n'


HEAD = head("s.db")
ISSUE_AUTH = """
[auth.tokens]
"tok-alice-laptop" = { user = "alice", nodes = ["alice-laptop"] }
"tok-alice-phone"  = { user = "alice", nodes = ["alice-phone"] }
"tok-bob"          = { user = "bob",   nodes = ["bob-laptop"] }
"legacy-token"     = ["device-a"]   # the old form keeps working: no user, no scope
"""
LISTS = "owner = :user OR id IN (SELECT list_id FROM list_members WHERE user_id = :user)"
TASKS = ("list_id IN (SELECT id FROM todo_lists WHERE owner = :user OR id IN "
         "(SELECT list_id FROM list_members WHERE user_id = :user))")
ISSUE_SCOPES = f"""
[scopes]   # table = a SQL condition on that table's rows; :user is the token's user
todo_lists = "{LISTS}"
tasks      = "{TASKS}"
"""
TOKEN = '\n[auth.tokens]\n"tok-secret-1" = '


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(text)
    return path


def scoped(database: Database, scopes: dict[str, str], **options: object) -> ServerConfig:
    models = {"todo_lists": "todo.List", "tasks": "todo.Task"}
    return ServerConfig(database=database, models=models, schema=SCHEMA, scopes=scopes, **options)  # type: ignore[arg-type]


# -- parsing --

def test_the_issue_config_parses(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, HEAD + ISSUE_AUTH + ISSUE_SCOPES))
    assert dict(config.tokens) == {"tok-alice-laptop": frozenset({"alice-laptop"}), "tok-alice-phone": frozenset({"alice-phone"}),
                                   "tok-bob": frozenset({"bob-laptop"}), "legacy-token": frozenset({"device-a"})}
    assert dict(config.users) == {"tok-alice-laptop": "alice", "tok-alice-phone": "alice", "tok-bob": "bob"}
    assert dict(config.scopes) == {"todo_lists": LISTS, "tasks": TASKS} and config.auth_required


def test_the_legacy_list_form_has_no_user_and_no_scopes(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, HEAD + '[auth.tokens]\n"t1" = ["device-a", "device-b"]\n"t2" = []\n'))
    assert dict(config.tokens) == {"t1": frozenset({"device-a", "device-b"}), "t2": frozenset()}
    assert dict(config.users) == {} and dict(config.scopes) == {}


def test_mixed_forms_and_scopes_without_any_user_are_allowed(tmp_path: Path) -> None:
    mixed = load_config(write(tmp_path, HEAD + '[auth.tokens]\n"a" = ["n1"]\n"b" = { user = "bob", nodes = ["n2", "n3"] }\n'))
    assert dict(mixed.tokens) == {"a": frozenset({"n1"}), "b": frozenset({"n2", "n3"})} and dict(mixed.users) == {"b": "bob"}
    legacy_only = load_config(write(tmp_path, HEAD + '[auth.tokens]\n"a" = ["n1"]\n[scopes]\ntasks = "1"\n'))
    assert dict(legacy_only.users) == {} and dict(legacy_only.scopes) == {"tasks": "1"}
    no_auth = load_config(write(tmp_path, HEAD + '[scopes]\ntasks = "1"\n'))
    assert not no_auth.auth_required and dict(no_auth.scopes) == {"tasks": "1"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (TOKEN + '{ nodes = ["n"] }', r"auth.tokens: token #1 \(a table\): user must be a non-empty string, got None"),
        (TOKEN + '{ user = "", nodes = ["n"] }', r"token #1 \(a table\): user must be a non-empty string, got ''"),
        (TOKEN + '{ user = 7, nodes = ["n"] }', "user must be a non-empty string, got 7"),
        (TOKEN + '{ user = "alice", nodes = "n" }', r"the token of user 'alice': nodes must be a list of node ids .*got 'n'"),
        (TOKEN + '{ user = "alice" }', "the token of user 'alice': nodes must be a list"),
        (TOKEN + '{ user = "alice", nodes = ["n", ""] }', "nodes must be a list of node ids"),
        (TOKEN + '{ usr = "alice", nodes = ["n"] }', r"token #1 \(a table\): unknown config key\(s\): usr \(did you mean user\?"),
        (TOKEN + '{ user = "alice", node = ["n"] }', r"unknown config key\(s\): node \(did you mean nodes\?\)"),
        (TOKEN + '"device-a"', r"list of node ids .* or to a table"),
        ('\n[scopes]\ntask = "1"', r"scopes.task: 'task' is not a table of \[models\] \(did you mean scopes.tasks\?\)"),
        ('\n[scopes]\nlist_members = "1"', r"scopes.list_members: 'list_members' is not a table of \[models\]"),
        ('\n[scopes]\ntasks = ""', "scopes.tasks: the condition must be a non-empty string of SQL, got ''"),
        ('\n[scopes]\ntasks = "  "', "scopes.tasks: the condition must be a non-empty string"),
        ('\n[scopes]\ntasks = 1', "scopes.tasks: the condition must be a non-empty string of SQL, got 1"),
        ('\n[scope]\ntasks = "1"', r"unknown config key\(s\): scope \(did you mean scopes\?\)"),
    ],
)
def test_bad_tokens_and_scopes_are_refused_naming_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message) as caught:
        load_config(write(tmp_path, HEAD + text))
    assert "tok-secret-1" not in str(caught.value)  # a token is a secret: errors name it by place or user


def test_scopes_must_be_a_table(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match=r"\[scopes\] must map table"):
        load_config(write(tmp_path, 'database = "s.db"\nscopes = "owner = :user"\n[models]\ntasks = "todo.Task"\n'))


def test_a_config_built_in_python_checks_users_and_scopes(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="must be one of auth.tokens"):
        scoped(tmp_path / "s.db", {}, users={"nobody": "alice"})
    with pytest.raises(InvalidParameterError, match="user must be a non-empty string"):
        scoped(tmp_path / "s.db", {}, tokens={"t": frozenset({"n"})}, users={"t": ""})
    with pytest.raises(InvalidParameterError, match="scopes.Tasks: 'Tasks' is not a table of"):
        scoped(tmp_path / "s.db", {"Tasks": "1"})


# -- the conditions, against the database at start-up --

@pytest.mark.parametrize(
    ("condition", "reasons"),
    [  # what SQLite says, what PostgreSQL says
        ("owner_id = :user", ("no such column: owner_id", 'column "owner_id" does not exist')),
        ("list_id IN (SELECT id FROM lists)", ("no such table: lists", 'relation "lists" does not exist')),
        ("list_id = = :user", ('near "=": syntax error', 'syntax error at or near "="')),
        ("list_id = :owner", (r".*binding parameter :owner.* \(a condition is one SQL expression whose only parameter is :user\)",
                              r"it names the parameter :owner .*only parameter is :user")),
        ("list_id = ?", (r".*has no name.*only parameter is :user", r"syntax error.*only parameter is :user")),
        ("list_id = :user; DROP TABLE todo_lists", ('near ";": syntax error', 'syntax error at or near ";"')),
        ("1) LIMIT 0; DELETE FROM tasks; SELECT (1", (r".*one statement at a time.*only parameter is :user",
                                                      r".*only parameter is :user")),
        ("list_id = :user -- the rest is gone", ("incomplete input", "syntax error at end of input")),
    ],
)
def test_a_condition_that_does_not_compile_is_a_start_up_error_naming_the_table(
    server_database: Database, server_backend: str, condition: str, reasons: tuple[str, str]
) -> None:
    reason = reasons[server_backend == "postgres"]
    with pytest.raises(InvalidParameterError, match=r"^scopes.tasks: the condition does not compile on table 'tasks': " + reason):
        create_app(scoped(server_database, {"todo_lists": LISTS, "tasks": condition}))


def test_a_refused_condition_runs_nothing(server_database: Database) -> None:
    create_app(scoped(server_database, {}))  # the schema, then a row
    server_query(server_database, "INSERT INTO tasks (id, title) VALUES ('t1', 'kept')")
    for condition in ("1) LIMIT 0; DELETE FROM tasks; SELECT (1", "1 = 1); DELETE FROM tasks; SELECT (1"):
        with pytest.raises(InvalidParameterError, match="scopes.tasks"):
            create_app(scoped(server_database, {"tasks": condition}))
    assert server_query(server_database, "SELECT title FROM tasks") == [("kept",)]


def test_python_dash_m_server_stub_exits_naming_the_scope(tmp_path: Path, server_database: Database, server_backend: str) -> None:
    bad_condition = write(tmp_path, head(server_database) + '[scopes]\ntasks = "owner = :user"\n')  # tasks has no owner column
    done = subprocess.run([sys.executable, "-m", "server_stub", "--config", str(bad_condition)], capture_output=True, text=True,
                          cwd=ROOT, timeout=30)
    assert done.returncode == 2
    missing = 'column "owner" does not exist' if server_backend == "postgres" else "no such column: owner"
    assert f"error: scopes.tasks: the condition does not compile on table 'tasks': {missing}" in done.stderr
    bad_table = write(tmp_path, head(server_database) + '[scopes]\nlists = "owner = :user"\n')
    done = subprocess.run([sys.executable, "-m", "server_stub", "--config", str(bad_table)], capture_output=True, text=True,
                          cwd=ROOT, timeout=30)
    assert done.returncode == 2 and "error: scopes.lists: 'lists' is not a table of [models]" in done.stderr


def test_scopes_without_any_user_start_with_a_warning(server_database: Database, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="server_stub"), serve(create_app(scoped(server_database, {"tasks": TASKS}))):
        pass
    assert "no token has a user: every client sees every row" in caplog.text


# -- authorize and the round --

def request(authorization: str | None) -> Request:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    return Request({"type": "http", "method": "POST", "path": "/sync/", "headers": headers})


def test_authorize_gives_the_user_of_a_token_table_and_none_for_a_legacy_token(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, HEAD + ISSUE_AUTH + ISSUE_SCOPES))
    assert authorize(request("Bearer tok-alice-phone"), config) == Grant(frozenset({"alice-phone"}), "alice")
    assert authorize(request("bearer  tok-bob "), config) == Grant(frozenset({"bob-laptop"}), "bob")
    assert authorize(request("Bearer legacy-token"), config) == Grant(frozenset({"device-a"}), None)
    for refused in (None, "Bearer tok-alice", "Basic tok-bob"):
        with pytest.raises(Refusal) as caught:
            authorize(request(refused), config)
        assert caught.value.status == 401
    open_config = load_config(write(tmp_path, HEAD))
    assert authorize(request(None), open_config) == OPEN == Grant(None, None)


CLOCK = HybridLogicalClock()


def sync(url: str, token: str, node: str, payloads: list[ModelPayload] | None = None) -> dict[str, set[str]]:
    """One round from checkpoint 0; the keys of each model the server sent back."""
    body = SyncManifest(node, 0, node_time=int(time.time()), payloads=payloads or []).seal().to_dict()
    response = httpx.post(url + "/sync/", content=json.dumps(body).encode(),
                          headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return {payload["model_label"]: set(payload["records"]) for payload in response.json()["payloads"]}


def test_each_round_sees_its_tokens_user_scope(tmp_path: Path, server_database: Database) -> None:
    limits = '\n[limits]\nclock_drift_max = false\n'
    config = load_config(write(tmp_path, head(server_database) + ISSUE_AUTH + ISSUE_SCOPES + limits))
    stamp = CLOCK.now()
    data = {"id": "alices", "owner": "alice", "name": "Groceries"}
    pushed = ModelPayload("todo.List", {"alices": SyncRecord("alices", data, {name: stamp for name in data})})
    with serve(create_app(config)) as url:
        sync(url, "tok-alice-laptop", "alice-laptop", [pushed])
        assert "alices" in sync(url, "tok-alice-phone", "alice-phone").get("todo.List", set())
        assert "alices" not in sync(url, "tok-bob", "bob-laptop").get("todo.List", set())
        assert "alices" in sync(url, "legacy-token", "device-a").get("todo.List", set())

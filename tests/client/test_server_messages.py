"""What ``python -m server_stub`` says when it cannot start: run as a user runs it, from another directory."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from client_sdk import InvalidParameterError, SyncClient

from .conftest import run


def test_without_the_server_extra_the_message_names_it(tmp_path: Path) -> None:
    blocked = ("import runpy, sys; sys.modules['starlette'] = None; sys.argv = ['server_stub', '--help']; "
               "runpy.run_module('server_stub', run_name='__main__')")
    done = run("-c", blocked, check=False, cwd=tmp_path)
    assert done.returncode != 0
    assert "offline-sync-sdk[server]" in done.stderr.splitlines()[-1]


def test_a_schema_typo_names_the_statement_and_leaves_no_database_behind(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text('database = "srv.db"\n'
                      'schema = "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT); CREAT TABLE oops (id TEXT);"\n'
                      '[models]\nnotes = "notes.Note"\n')
    done = run("-m", "server_stub", "--config", str(config), check=False, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == "error: schema: SQLite refused 'CREAT TABLE oops (id TEXT);': near \"CREAT\": syntax error\n"
    assert not (tmp_path / "srv.db").exists()


def test_a_config_typo_suggests_the_key_meant(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text('database = "srv.db"\n[models]\nnotes = "notes.Note"\n[limts]\n')
    done = run("-m", "server_stub", "--config", str(config), check=False, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "error: unknown config key(s): limts (did you mean limits?)\n"


def test_an_integer_key_reads_an_integer(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    connection.close()
    with pytest.raises(InvalidParameterError, match="has an INTEGER PRIMARY KEY"):
        SyncClient(path, models={"items": "app.Item"})

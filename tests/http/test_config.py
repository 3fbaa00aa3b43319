"""The server's TOML config and ``python -m server_stub``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from client_sdk import InvalidParameterError
from server_stub import ServerConfig, load_config
from tests.loopback import free_port

from .conftest import TODO_MODELS, TODO_SCHEMA

EXAMPLE = Path(__file__).resolve().parents[2] / "server_stub" / "example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(text)
    return path


def test_the_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.database == EXAMPLE.parent / "todo-server.db"
    assert dict(config.models) == TODO_MODELS and "CREATE TABLE Task" in config.schema
    assert config.tokens["change-me-device-a"] == frozenset({"device-a"}) and config.auth_required
    assert (config.request_bytes_max, config.batch_size, config.clock_drift_max) == (50 * 1024 * 1024, 2000, 300)


def test_defaults_a_schema_file_and_disabling_the_drift_check(tmp_path: Path) -> None:
    (tmp_path / "schema.sql").write_text(TODO_SCHEMA)
    config = load_config(write(tmp_path, """
database = "data/s.db"
schema_file = "schema.sql"
[models]
Task = "todo.Task"
[limits]
clock_drift_max = false
tombstone_retention_days = 90
"""))
    assert config.database == tmp_path / "data" / "s.db" and config.schema == TODO_SCHEMA
    assert config.clock_drift_max is None and not config.auth_required and config.node_id is None
    assert config.tombstone_retention_days == 90 and config.request_bytes_max == 50 * 1024 * 1024


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("database = 's.db'", r"\[models\] is required"),
        ("[models]\nT = 'a.T'", "database"),
        ("database = 's.db'\n[models]", "at least one table"),
        ("database = 's.db'\ndatabse = 'x'\n[models]\nT = 'a.T'", "unknown config key.*databse"),
        ("database = 's.db'\n[models]\nT = 'a.T'\n[limits]\nbatch = 5", "limits.batch"),
        ("database = 's.db'\n[models]\nT = 'a.T'\n[limits]\nbatch_size = 0", "batch_size"),
        ("database = 's.db'\n[models]\nT = 'a.T'\n[limits]\nclock_drift_max = true", "clock_drift_max"),
        ("database = 's.db'\n[models]\nT = 'a.T'\n[limits]\nrequest_bytes_max = -1", "request_bytes_max"),
        ("database = 's.db'\n[models]\nT = 'a.T'\nU = 'a.T'", "same label"),
        ("database = 's.db'\n[models]\nT = 'a.T'\n[auth.tokens]\nt = 'device-a'", "list of node ids"),
        ("database = 's.db'\n[models]\nT = 'a.T'\n[auth.tokens]\n'has space' = ['a']", "without spaces"),
        ("database = 's.db'\nschema = 'x'\nschema_file = 'y'\n[models]\nT = 'a.T'", "not both"),
        ("database = 's.db'\nschema_file = 'missing.sql'\n[models]\nT = 'a.T'", "cannot read schema_file"),
        ("database = ", "not valid TOML"),
    ],
)
def test_bad_configs_are_refused_naming_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        load_config(write(tmp_path, text))


def test_a_config_can_be_built_in_python_and_is_validated(tmp_path: Path) -> None:
    assert ServerConfig(database=tmp_path / "s.db", models=TODO_MODELS).batch_size == 2000
    with pytest.raises(InvalidParameterError, match="node ids"):
        ServerConfig(database=tmp_path / "s.db", models=TODO_MODELS, tokens={"t": ["device-a"]})  # type: ignore[dict-item]



def test_python_dash_m_server_stub_serves_the_config(tmp_path: Path) -> None:
    config = write(tmp_path, f'database = "s.db"\nnode_id = "hub"\nschema = """{TODO_SCHEMA}"""\n[models]\n'
                             'TodoList = "todo.TodoList"\nTask = "todo.Task"\n')
    port = free_port()
    command = [sys.executable, "-m", "server_stub", "--config", str(config), "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/health").json() == {"ok": True, "node_id": "hub"}
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "server_stub did not come up"
                time.sleep(0.05)
    finally:
        server.terminate()
        server.wait(10)
    assert (tmp_path / "s.db").exists()


def test_a_bad_config_exits_with_a_message(tmp_path: Path) -> None:
    config = write(tmp_path, "database = 's.db'")
    done = subprocess.run([sys.executable, "-m", "server_stub", "--config", str(config)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=30)
    assert done.returncode == 2 and "error: [models] is required" in done.stderr


@pytest.mark.parametrize("schema", ["", "schema = 'CREATE TABLE notes (id TEXT PRIMARY KEY)'\n"])
def test_a_database_that_cannot_be_opened_exits_with_a_message(tmp_path: Path, schema: str) -> None:
    config = write(tmp_path, f"database = '{tmp_path}/no-such-folder/s.db'\n{schema}[models]\nnotes = 'notes.Note'\n")
    done = subprocess.run([sys.executable, "-m", "server_stub", "--config", str(config)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=30)
    assert done.returncode == 2 and "unable to open database file" in done.stderr and "Traceback" not in done.stderr

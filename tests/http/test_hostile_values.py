"""Hostile values over real HTTP (issue 14, items 4, 7 and 10): non-finite numbers, values the column's
declared type cannot hold, and lone surrogates. A bad value is a per-key error and the rest of the
request applies; a bad identifier (key, label, node id) is a 400; nothing is ever a 5xx, and nothing
bad is ever stored or served. A device that receives such values from a hostile server refuses them
per key too, and the sync goes on."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from client_sdk import HttpTransport, HybridLogicalClock, SyncClient
from client_sdk.protocol import checksum_of
from server_stub import ServerConfig, create_app
from tests.loopback import serve
from tests.serverdb import Database, server_rows

LABEL = "lab.Thing"
SCHEMA = """
CREATE TABLE things (
    id TEXT PRIMARY KEY,
    i INTEGER,
    r REAL,
    t TEXT,
    b BOOLEAN,
    bl BLOB,
    j JSON,
    n NUMERIC,
    u,
    req TEXT NOT NULL DEFAULT ''
);
"""
POSTGRES_SCHEMA = """
CREATE TABLE things (
    id TEXT PRIMARY KEY,
    i BIGINT,
    r DOUBLE PRECISION,
    t TEXT,
    b BOOLEAN,
    j JSONB,
    n NUMERIC,
    req TEXT NOT NULL DEFAULT ''
);
"""
"""The same columns as PostgreSQL types them; it has no BLOB (``bl``) nor a column without a type (``u``)."""
SCHEMAS = {"sqlite": SCHEMA, "postgres": POSTGRES_SCHEMA}
COLUMNS = {"sqlite": ("id", "i", "r", "t", "b", "bl", "j", "n", "u", "req"),
           "postgres": ("id", "i", "r", "t", "b", "j", "n", "req")}
MODELS = {"things": LABEL}
CLOCK = HybridLogicalClock()

# Literals json.dumps cannot write: each placeholder string is swapped for its text after encoding.
RAW = {"@NEG_OVERFLOW@": "-1e400", "@POS_OVERFLOW@": "1e999", "@NAN@": "NaN", "@INF@": "Infinity", "@MINUS_INF@": "-Infinity"}


def _swapped(text: str) -> str:
    for placeholder, literal in RAW.items():
        text = text.replace(json.dumps(placeholder), literal)
    return text


def body_text(records: dict[str, dict[str, Any]], *, node_id: str = "device-a", label: str = LABEL,
              deletes: dict[str, int] | None = None, after_keys: dict | None = None) -> str:
    """A sealed request as the text on the wire, placeholders swapped for raw literals. The checksum is
    computed over what a JSON parser makes of that text, as the server computes it."""
    stamp = CLOCK.now()
    body: dict[str, Any] = {
        "node_id": node_id,
        "checkpoint": 0,
        "node_time": int(time.time()),
        "payloads": [{
            "model_label": label,
            "records": {key: {"data": data, "timestamps": {name: stamp for name in data}} for key, data in records.items()},
            "deletes": deletes or {},
        }],
        "after_keys": after_keys or {},
        "has_more": False,
    }
    body["checksum"] = checksum_of(json.loads(_swapped(json.dumps(body))))
    return _swapped(json.dumps(body))


def post(url: str, text: str | bytes) -> httpx.Response:
    content = text if isinstance(text, bytes) else text.encode("ascii")
    return httpx.post(url + "/sync/", content=content, headers={"Content-Type": "application/json"}, timeout=30)


def strict_json(response: httpx.Response) -> dict:
    """The answer, parsed the way any JSON parser must be able to: no NaN or Infinity anywhere."""
    def refuse(name: str) -> None:
        raise AssertionError(f"the server sent {name}, which is not JSON")
    return json.loads(response.content, parse_constant=refuse)


def pulled(url: str, node_id: str) -> dict[str, dict]:
    """What a fresh device pulls: key -> data."""
    response = post(url, body_text({}, node_id=node_id))
    assert response.status_code == 200, response.text
    return {key: record["data"] for payload in strict_json(response)["payloads"] for key, record in payload["records"].items()}


def stored_keys(database: Database) -> set[str]:
    return set(server_rows(database, "things"))


def errors_by_key(answer: dict) -> dict[str, str]:
    return {error["key"]: error["message"] for error in answer["errors"]}


@pytest.fixture
def server(server_database: Database, server_backend: str) -> Iterator[tuple[str, Database]]:
    config = ServerConfig(database=server_database, models=MODELS, schema=SCHEMAS[server_backend], node_id="server")
    with serve(create_app(config)) as url:
        yield url, config.database


# ---------------------------------------------------------------------------------------- item 4


def test_non_finite_numbers_are_refused_per_key_and_never_stored_or_served(
    server: tuple[str, Database], server_backend: str
) -> None:
    url, database = server
    records = {
        "good": {"id": "good", "r": 1.5, "j": {"big": 1e300}},
        "neg-overflow": {"id": "neg-overflow", "r": "@NEG_OVERFLOW@"},
        "pos-overflow": {"id": "pos-overflow", "i": "@POS_OVERFLOW@"},
        "nan": {"id": "nan", "r": "@NAN@"},
        "inf": {"id": "inf", "n": "@INF@"},
        "minus-inf": {"id": "minus-inf", "t": "@MINUS_INF@"},
        "nested": {"id": "nested", "j": {"deep": [1, {"x": "@NEG_OVERFLOW@"}]}},
        "nested-nan": {"id": "nested-nan", "j": ["@NAN@"]},
    }
    text = body_text(records)
    assert "-1e400" in text and "NaN" in text and "1e999" in text
    response = post(url, text)
    assert response.status_code == 200, response.text
    answer = strict_json(response)
    errors = errors_by_key(answer)
    assert answer["ok"] is False and set(errors) == set(records) - {"good"}
    for key, field in [("neg-overflow", "r"), ("pos-overflow", "i"), ("nan", "r"), ("inf", "n"), ("minus-inf", "t"),
                       ("nested", "j"), ("nested-nan", "j")]:
        assert "non-finite" in errors[key] and repr(field) in errors[key], errors[key]
    assert stored_keys(database) == {"good"}
    good = {**dict.fromkeys(COLUMNS[server_backend]), "id": "good", "r": 1.5, "j": {"big": 1e300}, "req": ""}
    assert pulled(url, "device-b") == {"good": good}


def test_the_text_infinity_is_just_text(server: tuple[str, Database]) -> None:
    url, _ = server
    answer = strict_json(post(url, body_text({"k": {"id": "k", "t": "-Infinity", "j": "NaN"}})))
    assert answer["ok"] is True, answer
    assert pulled(url, "device-b")["k"]["t"] == "-Infinity"


# ---------------------------------------------------------------------------------------- item 10

ACCEPTED: list[tuple[str, Any, Any]] = [  # field, value sent, value every device then reads
    ("i", 5, 5), ("i", -(2**63), -(2**63)), ("i", None, None),
    ("r", 1.5, 1.5), ("r", 2, 2.0), ("r", -(2**53), float(-(2**53))), ("r", None, None),
    ("t", "text", "text"), ("t", "", ""), ("t", "🙂 ünï", "🙂 ünï"), ("t", None, None),
    ("b", True, True), ("b", False, False), ("b", None, None),
    ("j", {"a": [1, "x", None, True, 2.5]}, {"a": [1, "x", None, True, 2.5]}), ("j", [1, 2], [1, 2]), ("j", "s", "s"),
    ("j", 7, 7), ("j", False, False), ("j", None, None),
    ("n", 5, 5), ("n", 1.5, 1.5), ("n", None, None),
    ("req", "x", "x"),
]
REFUSED: list[tuple[str, Any, str]] = [  # field, value sent, what the error says the column expects
    ("i", "high", "an integer"), ("i", "5", "an integer"), ("i", 1.5, "an integer"), ("i", True, "an integer"),
    ("i", [1], "an integer"),
    ("r", "1.5", "a number"), ("r", False, "a number"), ("r", 2**53 + 1, "a number"), ("r", {"x": 1}, "a number"),
    ("t", 5, "text"), ("t", 1.5, "text"), ("t", True, "text"), ("t", {"a": 1}, "text"), ("t", ["a"], "text"),
    ("b", "yes", "true or false"), ("b", 1, "true or false"), ("b", 0.0, "true or false"), ("b", [], "true or false"),
    ("req", None, "not null"),
]
ACCEPTED_ON: dict[str, list[tuple[str, Any, Any]]] = {  # what one backend's column types take besides
    "sqlite": [
        ("i", 3.0, 3),
        ("bl", "AQI=", "AQI="), ("bl", "", ""), ("bl", None, None),
        ("n", "2024-01-31", "2024-01-31"),
        ("u", 5, 5), ("u", 1.5, 1.5), ("u", "x", "x"), ("u", None, None),
    ],
    "postgres": [],
}
REFUSED_ON: dict[str, list[tuple[str, Any, str]]] = {
    "sqlite": [
        ("bl", "not base64!", "base64"), ("bl", 5, "base64"), ("bl", True, "base64"),
        ("n", True, "a number or text"), ("n", {"a": 1}, "a number or text"),
        ("u", True, "a number or text"), ("u", {"a": 1}, "a number or text"), ("u", [1], "a number or text"),
    ],
    "postgres": [
        ("i", 3.0, "an integer"),
        ("n", "2024-01-31", "a number"), ("n", True, "a number"), ("n", {"a": 1}, "a number"),
    ],
}


def test_values_are_checked_against_the_declared_type_per_key(server: tuple[str, Database], server_backend: str) -> None:
    url, database = server
    accepted, refused = ACCEPTED + ACCEPTED_ON[server_backend], REFUSED + REFUSED_ON[server_backend]
    good = {f"ok-{index}-{field}": (field, value, read) for index, (field, value, read) in enumerate(accepted)}
    bad = {f"bad-{index}-{field}": (field, value, expected) for index, (field, value, expected) in enumerate(refused)}
    records = {key: {"id": key, field: value} for key, (field, value, _) in {**good, **bad}.items()}
    response = post(url, body_text(records))
    assert response.status_code == 200, response.text
    errors = errors_by_key(strict_json(response))
    assert set(errors) == set(bad), sorted(set(errors) ^ set(bad))
    for key, (field, _, expected) in bad.items():
        assert repr(field) in errors[key] and expected in errors[key], (key, errors[key])
    assert stored_keys(database) == set(good)
    seen = pulled(url, "device-b")
    for key, (field, _, read) in good.items():
        value = seen[key][field]
        assert value == read and type(value) is type(read), (key, value, read)


def test_one_bad_field_refuses_the_record_and_names_every_bad_field(server: tuple[str, Database]) -> None:
    url, database = server
    answer = strict_json(post(url, body_text({
        "k": {"id": "k", "i": "x", "b": "yes", "t": "fine"},
        "other": {"id": "other", "t": "fine"},
    })))
    message = errors_by_key(answer)["k"]
    assert "'i'" in message and "'b'" in message and "'t'" not in message
    assert stored_keys(database) == {"other"}


# ---------------------------------------------------------------------------------------- item 7


def test_a_lone_surrogate_in_a_value_is_a_per_key_error(server: tuple[str, Database]) -> None:
    url, database = server
    records = {
        "good": {"id": "good", "t": "🙂", "j": {"emoji": "🙂"}},
        "value": {"id": "value", "t": "a\udfffb"},
        "high": {"id": "high", "t": "\ud800"},
        "nested": {"id": "nested", "j": ["ok", {"x": "\udfff"}]},
        "nested-name": {"id": "nested-name", "j": {"\udfff": 1}},
        "field": {"id": "field", "t\udfff": "x"},
    }
    text = body_text(records)
    assert "\\udfff" in text and "\\ud83d\\ude42" in text  # escaped as any JSON encoder writes them
    response = post(url, text)
    assert response.status_code == 200, response.text
    errors = errors_by_key(strict_json(response))
    assert set(errors) == set(records) - {"good"}
    for key in ("value", "high", "nested", "nested-name"):
        assert "surrogate" in errors[key], errors[key]
    assert "unknown field" in errors["field"]
    assert stored_keys(database) == {"good"}
    assert pulled(url, "device-b")["good"]["t"] == "🙂"


def test_a_lone_surrogate_as_raw_bytes_is_refused_too(server: tuple[str, Database]) -> None:
    """``json.loads`` decodes bytes with ``surrogatepass``: the UTF-8 form of U+DFFF becomes a lone surrogate."""
    url, database = server
    text = body_text({"raw": {"id": "raw", "t": "\udfff"}, "good": {"id": "good", "t": "x"}})
    content = text.encode("ascii").replace(b"\\udfff", b"\xed\xbf\xbf")  # the same string, unescaped
    assert b"\xed\xbf\xbf" in content and json.loads(content) == json.loads(text)
    response = post(url, content)
    assert 400 <= response.status_code < 500 or errors_by_key(strict_json(response)).keys() == {"raw"}, response.text
    assert "raw" not in stored_keys(database)


@pytest.mark.parametrize(
    ("where", "build"),
    [
        ("key", lambda: body_text({"\udfff": {"id": "\udfff", "t": "x"}})),
        ("deletes", lambda: body_text({}, deletes={"k\udfff": 5})),
        ("node_id", lambda: body_text({"k": {"id": "k"}}, node_id="device\udfff")),
        ("model_label", lambda: body_text({"k": {"id": "k"}}, label="lab.Thing\udfff")),
        ("after_keys", lambda: body_text({}, after_keys={LABEL: {"key": "\udfff", "timestamp": 1}})),
        ("after_keys", lambda: body_text({}, after_keys={"lab\udfff": {"key": "k", "timestamp": 1}})),
    ],
)
def test_a_lone_surrogate_in_an_identifier_is_a_400_naming_it(server: tuple[str, Database], where: str, build) -> None:
    url, database = server
    response = post(url, build())
    assert response.status_code == 400, response.text
    error = strict_json(response)["error"]
    assert error.startswith("Invalid manifest: ") and where in error and "surrogate" in error, error
    assert stored_keys(database) == set()
    assert httpx.get(url + "/health").status_code == 200


# ---------------------------------------------------------------------------------------- the device's side


class HostileServer:
    """Answers the first round with a page holding good and bad records, then empty answers."""

    def __init__(self) -> None:
        self.pages: list[str] = []

    async def handle(self, request: Request) -> Response:
        await request.body()
        text = self.pages.pop(0) if self.pages else answer_text({})
        return Response(text.encode("ascii"), media_type="application/json")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/sync/", self.handle, methods=["POST"])])


def answer_text(records: dict[str, dict[str, Any]]) -> str:
    stamp = CLOCK.now()
    body: dict[str, Any] = {
        "node_id": "server",
        "checkpoint": CLOCK.now(),
        "node_time": int(time.time()),
        "payloads": [{
            "model_label": LABEL,
            "records": {key: {"data": data, "timestamps": {name: stamp for name in data}} for key, data in records.items()},
            "deletes": {},
        }] if records else [],
    }
    body["checksum"] = checksum_of(json.loads(_swapped(json.dumps(body))))
    return _swapped(json.dumps({**body, "after_keys": {}, "has_more": False, "ok": True, "errors": [], "skipped": 0}))


def test_a_device_refuses_hostile_values_from_a_server_per_key_and_keeps_syncing(tmp_path: Path) -> None:
    rogue = HostileServer()
    rogue.pages.append(answer_text({
        "good": {"id": "good", "r": 2.5, "t": "fine", "b": True},
        "neg-overflow": {"id": "neg-overflow", "r": "@NEG_OVERFLOW@"},
        "minus-inf": {"id": "minus-inf", "r": "@MINUS_INF@"},
        "nan": {"id": "nan", "j": {"x": ["@NAN@"]}},
        "yes": {"id": "yes", "b": "yes"},
        "object": {"id": "object", "t": {"a": 1}},
        "surrogate": {"id": "surrogate", "t": "\udfff"},
    }))
    path = tmp_path / "device.db"
    with sqlite3.connect(path) as setup:
        setup.executescript(SCHEMA)
    with serve(rogue.app()) as base, SyncClient(
        path, models=MODELS, node_id="device", transport=HttpTransport(base + "/sync/", retries=0, timeout=10.0)
    ) as client:
        result = client.sync()
        errors = {error["key"]: error["message"] for error in result.errors}
        assert set(errors) == {"neg-overflow", "minus-inf", "nan", "surrogate"}
        assert "non-finite" in errors["neg-overflow"] and "'r'" in errors["neg-overflow"]
        assert "surrogate" in errors["surrogate"]
        # values this device's columns do not take (another schema version might) are held back
        held = {row["key"]: row["message"] for row in result.held_back}
        assert set(held) == {"yes", "object"} and "true or false" in held["yes"]
        rows = {row[0]: row for row in client.connection.execute("SELECT id, r, t, b FROM things")}
        assert rows == {"good": ("good", 2.5, "fine", 1)}
        assert client.pending_changes() == []
        client.sync()  # and the next sync runs as usual


def test_a_push_the_server_refuses_stays_pending_on_the_device_until_the_app_fixes_it(
    server: tuple[str, Database], server_backend: str, tmp_path: Path
) -> None:
    url, database = server
    path = tmp_path / "device.db"
    with sqlite3.connect(path) as setup:
        setup.executescript(SCHEMAS[server_backend])  # the server's columns
    with SyncClient(path, models=MODELS, node_id="device",
                    transport=HttpTransport(url + "/sync/", retries=0, timeout=10.0)) as client:
        with client.connection:  # SQLite takes "yes" in a BOOLEAN column; no other device could read it back
            client.connection.execute("INSERT INTO things (id, b, t) VALUES ('bad', 'yes', 'x'), ('good', 1, 'y')")
        for _ in range(2):  # reported at every sync, never lost
            result = client.sync()
            errors = {error["key"]: error["message"] for error in result.errors}
            assert set(errors) == {"bad"} and "'b'" in errors["bad"] and "true or false" in errors["bad"]
            assert stored_keys(database) == {"good"}
            assert [change.key for change in client.pending_changes()] == ["bad"]
        with client.connection:
            client.connection.execute("UPDATE things SET b = 0 WHERE id = 'bad'")
        assert client.sync().errors == []
        assert client.pending_changes() == []
    assert pulled(url, "device-b")["bad"]["b"] is False

"""What the SDK logs through the standard ``logging`` module (issue 21, point 6), caught with ``caplog``.

Real syncs against server_stub on 127.0.0.1; the existing server's quirks come from its recorded
answers (``vectors/reference_quirks.json``), replayed into the engine's real apply path.
"""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest

from client_sdk import HttpTransport, RetryExhaustedError, SyncClient
from tests.conftest import NOTES, Device, Server, create_file
from tests.http.test_reference_quirks import EXCHANGES
from tests.http.test_reference_quirks import device as replaying_device


def records(caplog: pytest.LogCaptureFixture, logger: str, level: int) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == logger and record.levelno == level]


def test_the_library_configures_no_logging() -> None:
    package = logging.getLogger("client_sdk")
    assert all(isinstance(handler, logging.NullHandler) for handler in package.handlers)
    assert package.propagate and package.level == logging.NOTSET
    assert not logging.getLogger("client_sdk.sync").handlers and not logging.getLogger("client_sdk.transport").handlers


def test_a_sync_logs_one_info_line_with_counts_and_duration_and_a_debug_line_per_round(
    server: Server, device: Device, caplog: pytest.LogCaptureFixture
) -> None:
    phone = device("phone", server())
    phone.connection.executemany("INSERT INTO notes VALUES (?, ?, 0)", [("n1", "milk"), ("n2", "eggs")])
    phone.connection.commit()
    with caplog.at_level(logging.DEBUG, logger="client_sdk"):
        result = phone.sync()
    (info,) = records(caplog, "client_sdk.sync", logging.INFO)
    assert info.startswith("sync of node 'phone' done in ") and " s: " in info
    assert "2 pushed" in info and f"{result.rounds} rounds" in info and "0 errors" in info
    rounds = records(caplog, "client_sdk.sync", logging.DEBUG)
    assert len(rounds) == result.rounds and rounds[0].startswith("round 1: sent 2 change(s)")
    assert records(caplog, "client_sdk.transport", logging.DEBUG)
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="client_sdk"):
        phone.sync()
    assert len(caplog.records) == 1 and "0 pushed" in caplog.records[0].getMessage()


def test_a_quarantined_row_is_a_warning_once_per_sync(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    schema = "CREATE TABLE readings (id TEXT PRIMARY KEY, value DOUBLE PRECISION);"
    url = server(schema=schema, models={"readings": "lab.Reading"})
    path = create_file(tmp_path / "lab.db", schema)
    transport = HttpTransport(url, retries=0)
    with SyncClient(path, models={"readings": "lab.Reading"}, node_id="lab", transport=transport) as client:
        client.connection.executescript("INSERT INTO readings VALUES ('fine', 1.5), ('infinite', 9e999);")
        with caplog.at_level(logging.INFO, logger="client_sdk"):
            client.sync()
    (warning,) = records(caplog, "client_sdk.sync", logging.WARNING)
    assert "quarantined lab.Reading row 'infinite'" in warning and "non-finite" in warning
    assert "1 pushed" in records(caplog, "client_sdk.sync", logging.INFO)[0]


def test_the_existing_servers_quirks_are_tolerated_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Exchange 16 has a key in both records and deletes; exchange 19 stamps ``list_id`` as ``list``."""
    for exchange, quirk in [(16, "came both as a row and as a deletion"), (19, "under a foreign key's field name")]:
        engine = replaying_device(tmp_path, f"fresh{exchange}")
        engine.transport.body = json.dumps(EXCHANGES[exchange]["response"]).encode()  # type: ignore[union-attr]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="client_sdk"):
            assert engine.sync().ok
        (warning,) = records(caplog, "client_sdk.sync", logging.WARNING)
        assert warning.startswith("tolerated a") and quirk in warning and "todo.Task" in warning


def test_a_failed_sync_and_each_retry_are_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    url = f"http://127.0.0.1:{port}/sync/"
    with SyncClient(create_file(tmp_path / "app.db"), models=NOTES, server_url=url, retries=1, retry_delay=0) as client:
        with caplog.at_level(logging.INFO, logger="client_sdk"), pytest.raises(RetryExhaustedError):
            client.sync()
    (retry,) = records(caplog, "client_sdk.transport", logging.WARNING)
    assert retry.startswith("sync round attempt 1 of 2 failed (ConnectError")
    (failed,) = records(caplog, "client_sdk.sync", logging.WARNING)
    assert "failed after" in failed and "RetryExhaustedError" in failed
    assert not records(caplog, "client_sdk.sync", logging.INFO)

"""How a sync fails when the server is not there, or not where the URL says (issue 21, points 4, 5, 10).

All against 127.0.0.1: a real server_stub (a sync URL without its trailing slash, https spoken to its
plain-HTTP port), a closed port. The one fault that cannot be caused without traffic leaving the
machine, a host name that does not resolve, is caused at the resolver: ``socket.getaddrinfo`` raises
the error the system resolver gives, and everything above it (httpx, the transport) runs for real.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

from client_sdk import ConnectionSetupError, HttpTransport, RetryExhaustedError, SyncClient, SyncManifest
from tests.conftest import NOTES, Device, Server, create_file, rows

SLOW_RETRIES = {"retries": 5, "retry_delay": 30.0}
"""Retries that would take minutes: a failure that comes back within seconds was not retried."""


def closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


def open_client(tmp_path: Path, url: str, **options: Any) -> SyncClient:
    return SyncClient(create_file(tmp_path / "app.db"), models=NOTES, node_id="app", server_url=url, **options)


def timed_failure(client: SyncClient, error: type[Exception]) -> tuple[Exception, float]:
    started = time.monotonic()
    with pytest.raises(error) as caught:
        client.sync()
    return caught.value, time.monotonic() - started


def test_a_sync_url_without_its_trailing_slash_is_followed_to_the_slash(server: Server, device: Device) -> None:
    url = server()
    assert url.endswith("/sync/")
    phone = device("phone", url.rstrip("/"))
    phone.connection.execute("INSERT INTO notes VALUES ('n1', 'milk', 0)")
    phone.connection.commit()
    phone.sync()
    assert phone.transport is not None and getattr(phone.transport, "url", None) == url
    assert phone.pending_count() == 0

    tablet = device("tablet", url.rstrip("/"))
    tablet.sync()
    assert rows(tablet.path) == {"n1": ("milk", 0)}


def test_https_to_a_plain_http_server_fails_at_once_saying_to_use_http(server: Server, tmp_path: Path) -> None:
    url = server().replace("http://", "https://")
    with open_client(tmp_path, url, **SLOW_RETRIES) as client:
        error, elapsed = timed_failure(client, ConnectionSetupError)
    assert "TLS" in str(error) and "http://" in str(error)
    assert elapsed < 20  # five retries would have slept 15 minutes


def test_a_host_name_that_does_not_resolve_fails_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_such_host(host: object, *args: object, **kwargs: object) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    with open_client(tmp_path, "http://sync.example.invalid/sync/", **SLOW_RETRIES) as client:
        error, elapsed = timed_failure(client, ConnectionSetupError)
        assert client.last_sync is not None and not client.last_sync.ok
    assert "'sync.example.invalid' does not resolve" in str(error) and "Name or service not known" in str(error)
    assert elapsed < 20


def test_a_temporary_resolver_failure_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def resolver_away(host: object, *args: object, **kwargs: object) -> Any:
        calls.append(host)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", resolver_away)
    with HttpTransport("http://sync.example.invalid/sync/", retries=2, retry_delay=0) as http:
        with pytest.raises(RetryExhaustedError, match="3 attempt"):
            http.send(SyncManifest("device", 0).seal())
    assert len(calls) == 3


def test_offline_sync_with_the_default_settings_gives_up_within_seconds(tmp_path: Path) -> None:
    with open_client(tmp_path, f"http://127.0.0.1:{closed_port()}/sync/") as client:
        error, elapsed = timed_failure(client, RetryExhaustedError)
    assert "3 attempt(s)" in str(error)  # refused is retried: a server restarting refuses for a moment
    assert elapsed < 15  # about 1.5 s of back-off (0.5 s, then 1 s); generous for a loaded machine


def test_offline_sync_without_retries_fails_at_once(tmp_path: Path) -> None:
    with open_client(tmp_path, f"http://127.0.0.1:{closed_port()}/sync/", retries=0) as client:
        error, elapsed = timed_failure(client, RetryExhaustedError)
    assert "1 attempt(s)" in str(error)
    assert elapsed < 10


def test_the_settings_reach_the_transport_and_are_checked(tmp_path: Path) -> None:
    with open_client(tmp_path, "http://127.0.0.1:1/sync/", timeout=2.5, retries=1, retry_delay=0.25) as client:
        assert isinstance(client.transport, HttpTransport)
        assert (client.transport.timeout, client.transport.retries, client.transport.retry_delay) == (2.5, 1, 0.25)
    with pytest.raises(ValueError, match="retries"):
        open_client(tmp_path, "http://127.0.0.1:1/sync/", retries=-1)

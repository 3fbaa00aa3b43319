"""HttpTransport against a scripted server on 127.0.0.1: headers, retries, refusals and hostile responses."""

from __future__ import annotations

import asyncio
import gzip
import inspect
import json
import socket
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from client_sdk import (
    DatabaseEngine,
    DependencyGraph,
    HybridLogicalClock,
    InvalidParameterError,
    InvalidResponseError,
    ManifestChecksumError,
    ManifestFieldError,
    MemoryStorage,
    ModelPayload,
    RetryExhaustedError,
    SyncAbortedError,
    SyncManifest,
    SyncRecord,
)
from client_sdk.transport import HttpTransport

from .conftest import LIST, serve

MiB = 1024 * 1024
Reply = Callable[[], Response | Awaitable[Response]]


def answer(checkpoint: int = 0, **fields: object) -> dict:
    """A valid, sealed server answer as a dict."""
    body = SyncManifest("server", checkpoint, **fields).seal().to_dict()  # type: ignore[arg-type]
    return {**body, "ok": True, "errors": [], "skipped": 0}


def reply(body: object, status: int = 200, *, gzipped: bool = False, headers: dict[str, str] | None = None) -> Reply:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    extra = dict(headers or {})
    if gzipped:
        content = gzip.compress(content)
        extra["Content-Encoding"] = "gzip"
    return lambda: Response(content, status, headers=extra, media_type="application/json")


@dataclass
class Seen:
    headers: httpx.Headers
    body: bytes
    port: int


@dataclass
class Rogue:
    """Answers each request with the next scripted reply (a valid empty answer once the script runs out)."""

    script: list[Reply] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        assert request.client is not None
        self.seen.append(Seen(httpx.Headers(request.headers.raw), body, request.client.port))
        response = self.script.pop(0)() if self.script else reply(answer())()
        return await response if inspect.isawaitable(response) else response

    def app(self) -> Starlette:
        return Starlette(routes=[Route(path, self.handle, methods=["GET", "POST"]) for path in ("/sync/", "/sync")])


@pytest.fixture(scope="module")
def rogue_server() -> Iterator[tuple[Rogue, str]]:
    server = Rogue()
    with serve(server.app()) as base:
        yield server, base + "/sync/"


@pytest.fixture
def rogue(rogue_server: tuple[Rogue, str]) -> tuple[Rogue, str]:
    server, url = rogue_server
    server.script.clear()
    server.seen.clear()
    return server, url


def transport(url: str, **options: object) -> HttpTransport:
    options.setdefault("retry_delay", 0)
    return HttpTransport(url, **options)  # type: ignore[arg-type]


def request_manifest() -> SyncManifest:
    record = SyncRecord("k1", {"id": "k1", "name": "x"}, {"id": 5, "name": 5})
    return SyncManifest("device-a", 3, node_time=1_700_000_000, payloads=[ModelPayload(LIST, {"k1": record})]).seal()


def test_rounds_are_gzip_json_with_the_auth_header_over_one_kept_alive_connection(rogue: tuple[Rogue, str]) -> None:
    server, url = rogue
    with transport(url, auth_token="s3cret", headers={"X-App": "todo"}) as http:
        first = http.exchange(request_manifest())
        http.exchange(request_manifest())
    assert first.node_id == "server" and first.errors == []
    assert http.bytes_sent == sum(len(seen.body) for seen in server.seen) and http.bytes_received > 0
    assert len(server.seen) == 2 and server.seen[0].port == server.seen[1].port
    headers = server.seen[0].headers
    assert headers["content-type"] == "application/json" and headers["content-encoding"] == "gzip"
    assert headers["accept-encoding"] == "gzip" and headers["authorization"] == "Bearer s3cret"
    assert headers["x-app"] == "todo"
    assert json.loads(gzip.decompress(server.seen[0].body)) == request_manifest().to_dict()


def test_gzip_and_plain_answers_are_both_read(rogue: tuple[Rogue, str]) -> None:
    server, url = rogue
    server.script = [reply(answer(checkpoint=7), gzipped=True), reply(answer(checkpoint=8))]
    with transport(url) as http:
        assert [http.exchange(request_manifest()).checkpoint for _ in range(2)] == [7, 8]


@pytest.mark.parametrize("status", [400, 401, 403, 405, 409, 413, 415, 422])
def test_a_4xx_aborts_at_once_with_the_status_and_the_server_text(rogue: tuple[Rogue, str], status: int) -> None:
    server, url = rogue
    server.script = [reply({"ok": False, "error": "Sync aborted"}, status)]
    with transport(url, retries=3) as http, pytest.raises(SyncAbortedError) as caught:
        http.exchange(request_manifest())
    assert type(caught.value) is SyncAbortedError
    assert caught.value.status == status and caught.value.server_error == "Sync aborted"
    assert f"HTTP {status}" in str(caught.value) and len(server.seen) == 1


def test_a_4xx_without_a_json_error_still_carries_its_text(rogue: tuple[Rogue, str]) -> None:
    server, url = rogue
    server.script = [reply(b"<html>Forbidden</html>", 403)]
    with transport(url) as http, pytest.raises(SyncAbortedError) as caught:
        http.exchange(request_manifest())
    assert caught.value.status == 403 and caught.value.server_error == "<html>Forbidden</html>"


def test_5xx_is_retried_then_succeeds(rogue: tuple[Rogue, str]) -> None:
    server, url = rogue
    server.script = [reply(b"oops", 500), reply(b"", 502), reply(answer(checkpoint=9))]
    with transport(url, retries=3) as http:
        assert http.exchange(request_manifest()).checkpoint == 9
    assert len(server.seen) == 3


def test_5xx_past_the_retries_is_retry_exhausted(rogue: tuple[Rogue, str]) -> None:
    server, url = rogue
    server.script = [reply(b"busy", 503)] * 4
    with transport(url, retries=3) as http, pytest.raises(RetryExhaustedError) as caught:
        http.exchange(request_manifest())
    assert caught.value.status == 503 and "4 attempt(s)" in str(caught.value) and len(server.seen) == 4


def test_connection_errors_and_timeouts_are_retried_then_exhausted(rogue: tuple[Rogue, str]) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with transport(f"http://127.0.0.1:{port}/sync/", retries=2) as http, pytest.raises(RetryExhaustedError) as caught:
        http.exchange(request_manifest())
    assert isinstance(caught.value.__cause__, httpx.ConnectError) and "3 attempt(s)" in str(caught.value)

    server, url = rogue

    async def too_slow() -> Response:
        await asyncio.sleep(0.5)
        return reply(answer())()

    server.script = [too_slow, too_slow]
    with transport(url, retries=1, timeout=0.1) as http, pytest.raises(RetryExhaustedError) as caught:
        http.exchange(request_manifest())
    assert isinstance(caught.value.__cause__, httpx.TimeoutException) and len(server.seen) == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>hello</html>", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"checkpoint": 0}', "no node_id"),
        (b'{"node_id": "server"}', "no checkpoint"),
        (b"", "not JSON"),
    ],
)
def test_an_answer_that_is_not_a_manifest_object_is_an_invalid_response(
    rogue: tuple[Rogue, str], body: bytes, message: str
) -> None:
    server, url = rogue
    server.script = [reply(body)]
    with transport(url) as http, pytest.raises(InvalidResponseError, match=message):
        http.exchange(request_manifest())


def test_a_malformed_manifest_is_an_invalid_response_chaining_the_cause(rogue: tuple[Rogue, str]) -> None:
    server, url = rogue
    server.script = [reply({**answer(), "checkpoint": -1})]
    with transport(url) as http, pytest.raises(InvalidResponseError) as caught:
        http.exchange(request_manifest())
    assert isinstance(caught.value.__cause__, ManifestFieldError) and "checkpoint" in str(caught.value)


def test_a_wrong_or_missing_checksum_is_refused(rogue: tuple[Rogue, str]) -> None:
    server, url = rogue
    tampered = answer(checkpoint=5)
    tampered["checkpoint"] = 6
    server.script = [reply(tampered), reply({**answer(), "checksum": None})]
    with transport(url) as http:
        for _ in range(2):
            with pytest.raises(ManifestChecksumError):
                http.exchange(request_manifest())


def test_oversized_answers_are_refused_by_header_and_while_streaming(rogue: tuple[Rogue, str]) -> None:
    server, url = rogue
    big = json.dumps({**answer(), "padding": "x" * (2 * MiB)}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 64 * 1024):
            yield big[start:start + 64 * 1024]

    server.script = [reply(big), lambda: StreamingResponse(chunks(), media_type="application/json")]
    with transport(url, response_bytes_max=MiB) as http:
        with pytest.raises(InvalidResponseError, match="exceeds response_bytes_max"):
            http.exchange(request_manifest())
        with pytest.raises(InvalidResponseError, match="exceeds response_bytes_max"):
            http.exchange(request_manifest())


def _bomb(inflated: int) -> bytes:
    squeezer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MiB)
    return b"".join(squeezer.compress(zeros) for _ in range(inflated // MiB)) + squeezer.flush()


def test_a_gzip_bomb_is_an_invalid_response_not_a_memory_spike(rogue: tuple[Rogue, str]) -> None:
    server, url = rogue
    bomb = _bomb(128 * MiB)
    assert len(bomb) < MiB // 4
    server.script = [reply(bomb, headers={"Content-Encoding": "gzip"})]
    with transport(url, response_bytes_max=MiB) as http:
        tracemalloc.start()
        try:
            with pytest.raises(InvalidResponseError, match="inflates past"):
                http.exchange(request_manifest())
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 8 * MiB


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (gzip.compress(b'{"node_id": "server"}', mtime=0)[:-6], {"Content-Encoding": "gzip"}, "not valid gzip"),
        (b'{"node_id": "server"}', {"Content-Encoding": "gzip"}, "not valid gzip"),
        (b'{"node_id": "server"}', {"Content-Encoding": "br"}, "unsupported Content-Encoding"),
    ],
    ids=["truncated-gzip", "plain-labelled-gzip", "brotli"],
)
def test_broken_or_unknown_encodings_are_invalid_responses(
    rogue: tuple[Rogue, str], body: bytes, headers: dict[str, str], message: str
) -> None:
    server, url = rogue
    server.script = [reply(body, headers=headers)]
    with transport(url) as http, pytest.raises(InvalidResponseError, match=message):
        http.exchange(request_manifest())


@pytest.mark.parametrize(
    "location",
    ["http://127.0.0.1:1/elsewhere/", "/elsewhere/", "http://127.0.0.1:1/sync/", "https://{host}/sync/", "/sync/?x=1"],
)
def test_a_redirect_that_does_more_than_add_a_slash_is_not_followed(rogue: tuple[Rogue, str], location: str) -> None:
    server, url = rogue
    location = location.format(host=url.split("/")[2])
    server.script = [reply(b"", 307, headers={"Location": location})]
    with transport(url.rstrip("/")) as http, pytest.raises(InvalidResponseError, match="HTTP 307") as caught:
        http.exchange(request_manifest())
    assert caught.value.status == 307 and len(server.seen) == 1
    assert "set the sync URL to the address the server expects" in str(caught.value)
    assert location.rsplit(":", 1)[-1] in str(caught.value)


@pytest.mark.parametrize("location", ["/sync/", "http://{host}/sync/"])
def test_a_redirect_that_only_adds_the_slash_is_followed_once(rogue: tuple[Rogue, str], location: str) -> None:
    server, url = rogue
    server.script = [reply(b"", 307, headers={"Location": location.format(host=url.split("/")[2])})]
    with transport(url.rstrip("/")) as http:
        assert http.exchange(request_manifest()).node_id == "server"
        assert http.url == url and len(server.seen) == 2
        server.script = [reply(b"", 308, headers={"Location": "/sync//"})]
        with pytest.raises(InvalidResponseError, match="HTTP 308"):
            http.exchange(request_manifest())


def test_nothing_is_applied_from_an_answer_that_fails_its_checksum(rogue: tuple[Rogue, str]) -> None:
    server, url = rogue
    clock = HybridLogicalClock()
    storage = MemoryStorage([LIST], clock)
    storage.write(LIST, "mine", {"name": "local"})
    intruder = SyncRecord("theirs", {"id": "theirs", "name": "x"}, {"id": clock.now(), "name": clock.now()})
    forged = answer(checkpoint=clock.now(), payloads=[ModelPayload(LIST, {"theirs": intruder})])
    forged["payloads"][0]["records"]["theirs"]["data"]["name"] = "forged"
    server.script = [reply(forged)]
    with transport(url) as http:
        engine = DatabaseEngine(storage, DependencyGraph({LIST: set()}), clock, "device-a",
                                transaction=storage.transaction, transport=http)
        with pytest.raises(ManifestChecksumError):
            engine.sync()
    assert set(storage.rows(LIST)) == {"mine"} and storage.get_checkpoint() == 0
    assert [key for key, _ in storage.get_pending(LIST)] == ["mine"]


def test_reachable_is_any_http_answer(rogue: tuple[Rogue, str]) -> None:
    _, url = rogue
    with transport(url) as http:
        assert http.reachable()
    with transport("http://127.0.0.1:1/sync/") as http:
        assert not http.reachable()


@pytest.mark.parametrize(
    "options",
    [
        {"url": "ftp://example.com/sync/"},
        {"url": "http:///sync/"},
        {"url": "example.com/sync/"},
        {"url": "http://example.com:99999/"},
        {"url": ""},
        {"url": None},
        {"retries": -1},
        {"retries": 1.5},
        {"retries": True},
        {"retry_delay": -0.1},
        {"retry_delay": float("nan")},
        {"timeout": 0},
        {"timeout": "30"},
        {"response_bytes_max": 0},
        {"response_bytes_max": 1.0},
        {"headers": {"Content-Type": "text/plain"}},
        {"headers": {"X-Bad": "line\r\nbreak"}},
        {"headers": {"X-Num": 1}},
        {"headers": ["X-A", "b"]},
        {"auth_token": ""},
        {"auth_token": "has space"},
        {"auth_token": 123},
        {"auth_token": "t", "headers": {"authorization": "Basic x"}},
    ],
)
def test_arguments_are_validated(options: dict) -> None:
    options = {"url": "http://127.0.0.1:8000/sync/", **options}
    with pytest.raises(InvalidParameterError):
        HttpTransport(**options)

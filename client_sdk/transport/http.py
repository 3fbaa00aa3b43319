"""``HttpTransport``: one sync round = one gzip-compressed POST (PROTOCOL.md section 5), on httpx."""

from __future__ import annotations

import logging
import math
import socket
import ssl
import time
import zlib
from collections.abc import Mapping
from types import TracebackType
from urllib.parse import urljoin, urlsplit

import httpx

from ..errors import (
    ConnectionSetupError,
    DecompressionLimitError,
    InvalidParameterError,
    InvalidResponseError,
    RetryExhaustedError,
    require,
)
from ..protocol.limits import BODY_BYTES_MAX
from ..protocol.wire import SyncManifest, parse_json
from .binding import read_response_body, refused
from .compression import BodyTooLarge, BoundedBody, gzip_bytes

RESERVED_HEADERS = frozenset({"content-type", "content-encoding", "accept-encoding", "content-length"})
"""Set by the transport itself; a caller-supplied value would break the binding."""

REDIRECTS = frozenset({301, 302, 307, 308})
"""Followed (once, the POST sent again) only when the new address is the sync URL plus a trailing slash."""

log = logging.getLogger("client_sdk.transport")


class _Retryable(Exception):
    """Internal: this attempt failed in a way worth retrying (5xx or a network error)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class HttpTransport:
    """Carries rounds to a sync URL over one keep-alive ``httpx.Client``.

    A 4xx answer raises :class:`SyncAbortedError` at once (``status`` and the
    server's ``error`` text on it); connection errors, timeouts and 5xx are
    retried ``retries`` times, ``retry_delay * 2**n`` seconds apart, then
    :class:`RetryExhaustedError`. Failures retrying cannot fix (a host name
    that does not resolve, TLS that cannot be set up) raise
    :class:`ConnectionSetupError` at once. A redirect that only adds the
    trailing slash to the URL is followed, and ``url`` becomes the new
    address; any other redirect raises :class:`InvalidResponseError` naming
    it. Responses are bounded to
    ``response_bytes_max`` bytes both as received and once inflated, then
    validated and checksum-verified before ``exchange`` returns them.
    ``bytes_sent`` and ``bytes_received`` count body bytes as they crossed the
    wire (compressed), for data-usage reports.
    """

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        retries: int = 3,
        retry_delay: float = 1.0,
        timeout: float = 30.0,
        response_bytes_max: int = BODY_BYTES_MAX,
        auth_token: str | None = None,
    ) -> None:
        self.url = _checked_url(url)
        extra = _checked_headers(headers)
        require(_is_int(retries) and retries >= 0, f"retries must be a non-negative integer, got {retries!r}")
        require(_is_number(retry_delay) and retry_delay >= 0, f"retry_delay must be a non-negative number, got {retry_delay!r}")
        require(_is_number(timeout) and timeout > 0, f"timeout must be a positive number, got {timeout!r}")
        require(auth_token is None or "authorization" not in {name.lower() for name in extra},
                 "pass the token either as auth_token or as an Authorization header, not both")
        require(_is_int(response_bytes_max) and response_bytes_max > 0,
                 f"response_bytes_max must be a positive integer, got {response_bytes_max!r}")
        require(auth_token is None or (isinstance(auth_token, str) and _is_token(auth_token)),
                 "auth_token must be a non-empty ASCII string without spaces")
        self.retries = retries
        self.retry_delay = float(retry_delay)
        self.timeout = float(timeout)
        self.response_bytes_max = response_bytes_max
        self.bytes_sent = 0
        self.bytes_received = 0
        if auth_token is not None:
            extra["Authorization"] = f"Bearer {auth_token}"
        extra.update({"Content-Type": "application/json", "Content-Encoding": "gzip", "Accept-Encoding": "gzip"})
        self._client = httpx.Client(headers=extra, timeout=self.timeout, follow_redirects=False)

    # -- Transport --
    def exchange(self, manifest: SyncManifest) -> SyncManifest:
        return self.decode(self.send(manifest))

    def send(self, manifest: SyncManifest) -> bytes:
        """POST the manifest (retrying as configured); the 200 answer's body, inflated and bounded."""
        body = gzip_bytes(manifest.to_json().encode("ascii"))
        attempt = 0
        while True:
            try:
                return self._round(body)
            except _Retryable as exc:
                if attempt >= self.retries:
                    raise RetryExhaustedError(
                        f"sync round failed after {attempt + 1} attempt(s); last: {exc}", status=exc.status
                    ) from (exc.__cause__ or exc)
                delay = self.retry_delay * 2**attempt
                log.warning("sync round attempt %d of %d failed (%s); retrying in %.1f s",
                            attempt + 1, self.retries + 1, exc, delay)
                time.sleep(delay)
                attempt += 1

    def reachable(self) -> bool:
        """Whether the server answers at all: any HTTP status to a GET on the sync URL counts."""
        try:
            self._client.get(self.url, timeout=min(5.0, self.timeout))
        except httpx.HTTPError:
            return False
        return True

    # -- lifetime --
    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpTransport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- one attempt --
    def _round(self, body: bytes, redirected: bool = False) -> bytes:
        self.bytes_sent += len(body)
        location: str | None = None
        try:
            with self._client.stream("POST", self.url, content=body) as response:
                status = response.status_code
                if status >= 500:
                    raise _Retryable(f"HTTP {status} from the server", status)
                if status in REDIRECTS:
                    location = response.headers.get("Location")
                    payload = b""
                else:
                    payload = self._read_body(response)
        except httpx.TransportError as exc:
            unfixable = self._unfixable(exc)
            if unfixable is not None:
                raise ConnectionSetupError(unfixable) from exc
            raise _Retryable(f"{type(exc).__name__}: {exc or 'no detail'}") from exc
        if status in REDIRECTS and not redirected:
            target = _slash_added(self.url, location)
            if target is not None:
                log.warning("the sync URL %s redirects to %s: following; configure that URL to save a request",
                            self.url, target)
                self.url = target
                return self._round(body, redirected=True)
        if status in REDIRECTS:
            where = f"to {urljoin(self.url, location)}" if location else "without a Location"
            raise InvalidResponseError(
                f"the sync URL {self.url} redirects (HTTP {status}) {where}; a sync is only sent on when the "
                "redirect adds the trailing slash: set the sync URL to the address the server expects",
                status=status,
            )
        if 400 <= status < 500:
            raise refused(status, *_error_parts(payload))
        if status != 200:
            raise InvalidResponseError(f"unexpected HTTP {status} from the sync URL", status=status)
        log.debug("POST %s: sent %d bytes, HTTP 200, %d bytes once inflated", self.url, len(body), len(payload))
        return payload

    def _unfixable(self, exc: httpx.TransportError) -> str | None:
        """What is wrong, when ``exc`` is a failure no retry can fix: a host name that does not resolve
        (a temporary resolver failure is retried), TLS that cannot be set up. ``None`` otherwise
        (a refused connection is retried: a server restarting refuses for a moment)."""
        parts = urlsplit(self.url)
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, socket.gaierror) and cause.errno != socket.EAI_AGAIN:
                return (f"the sync URL's host {parts.hostname!r} does not resolve ({cause.strerror}): "
                        "check the host name in the URL, or whether the device is online")
            if isinstance(cause, ssl.SSLCertVerificationError):
                return (f"the TLS certificate of {parts.netloc} did not verify ({cause.verify_message}): "
                        "check the host name in the sync URL and the server's certificate")
            if isinstance(cause, ssl.SSLError) and not isinstance(cause, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
                return (f"TLS could not be set up with {parts.netloc} ({cause.reason or cause}); if the server "
                        "speaks plain HTTP, use an http:// sync URL")
            cause = cause.__cause__ or cause.__context__
        return None

    def decode(self, body: bytes) -> SyncManifest:
        """The manifest of a 200 body, validated and its checksum verified."""
        return read_response_body(body)

    def _read_body(self, response: httpx.Response) -> bytes:
        """The body, bounded as received and once inflated (a gzip bomb is refused, not inflated)."""
        limit = self.response_bytes_max
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise InvalidResponseError(f"response of {declared} bytes exceeds response_bytes_max={limit}")
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("gzip", "identity"):
            raise InvalidResponseError(f"response has an unsupported Content-Encoding {encoding!r}")
        body = BoundedBody(limit, gzipped=encoding == "gzip")
        try:
            for chunk in response.iter_raw():
                self.bytes_received += len(chunk)
                body.feed(chunk)
            return body.finish()
        except BodyTooLarge as exc:
            raise InvalidResponseError(f"response exceeds response_bytes_max={limit} bytes") from exc
        except DecompressionLimitError as exc:
            raise InvalidResponseError(f"response inflates past response_bytes_max={limit} bytes") from exc
        except zlib.error as exc:
            raise InvalidResponseError(f"response is not valid gzip: {exc}") from exc


def _slash_added(url: str, location: str | None) -> str | None:
    """``location`` (resolved against ``url``) when it is ``url`` with a trailing slash added to the path:
    same scheme, host, port and query. ``None`` for any other redirect."""
    if not location:
        return None
    target = urljoin(url, location)
    old, new = urlsplit(url), urlsplit(target)
    try:
        same_place = (old.scheme, old.hostname, old.port) == (new.scheme, new.hostname, new.port)
    except ValueError:  # a malformed port in Location
        return None
    if same_place and old.query == new.query and new.path == old.path + "/" and not old.path.endswith("/"):
        return target
    return None


def _error_parts(body: bytes) -> tuple[str, object, object]:
    """The server's ``error`` text (or the start of whatever it sent instead), ``reason`` and ``detail``."""
    try:
        decoded = parse_json(body)
    except (ValueError, RecursionError):
        decoded = None
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
        return decoded["error"], decoded.get("reason"), decoded.get("detail")
    text = body[:200].decode("utf-8", "replace").strip()
    return text or "(empty body)", None, None


def _checked_url(url: object) -> str:
    require(isinstance(url, str) and bool(url), f"url must be a non-empty string, got {url!r}")
    assert isinstance(url, str)
    parts = urlsplit(url)
    require(parts.scheme in ("http", "https"), f"url must be http:// or https://, got {url!r}")
    require(bool(parts.hostname), f"url has no host: {url!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise InvalidParameterError(f"url has an invalid port: {url!r}") from exc
    return url


def _checked_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    if headers is None:
        return {}
    require(isinstance(headers, Mapping), "headers must be a mapping of name -> value")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        require(isinstance(name, str) and isinstance(value, str), f"header {name!r} must map a string to a string")
        require(name.lower() not in RESERVED_HEADERS, f"header {name!r} is set by the transport")
        require(_is_token(name) and value.isascii() and value.isprintable(),
                 f"header {name!r} must be an ASCII name without spaces and a printable ASCII value")
        checked[name] = value
    return checked


def _is_token(text: str) -> bool:
    return bool(text) and text.isascii() and text.isprintable() and " " not in text


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

"""Reading a sync request: credentials, headers and a body bounded before and after inflating.

Each check raises :class:`Refusal` with the status and text of PROTOCOL.md
section 5, before anything reaches the engine.
"""

from __future__ import annotations

import asyncio
import hmac
import zlib
from typing import NamedTuple

from starlette.requests import ClientDisconnect, Request

from client_sdk.errors import DecompressionLimitError
from client_sdk.transport.binding import (
    AUTH_REQUIRED,
    BAD_CONTENT_ENCODING,
    BAD_CONTENT_TYPE,
    INCOMPLETE_BODY,
    INVALID_CONTENT_LENGTH,
    INVALID_GZIP,
    TOO_LARGE,
)
from client_sdk.transport.compression import BoundedBody

from .config import ServerConfig

BODY_TIMEOUT = "Request body not received in time"


class Refusal(Exception):
    """A request the server answers with a 4xx and ``{"ok": false, "error": text}``."""

    def __init__(self, status: int, text: str, extra: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.extra = extra or {}
        """Keys added to the body beside ``error`` (a 409's ``reason`` and ``detail``)."""
        self.headers = headers


class Grant(NamedTuple):
    """What a request's token allows: the node ids it may sync as (``None``: any, no auth configured)
    and the user whose scope it sees (``None``: unscoped, every row; a token in the list form has none)."""

    nodes: frozenset[str] | None
    user: str | None


OPEN = Grant(None, None)
"""The grant of every request when no auth is configured."""


def authorize(request: Request, config: ServerConfig) -> Grant:
    """What the caller may do (:data:`OPEN` when no auth is configured); 401 without a valid token."""
    if not config.auth_required:
        return OPEN
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        for known, nodes in config.tokens.items():  # compare_digest: no timing hint of how much matched
            if hmac.compare_digest(known.encode(), token.encode("utf-8", "replace")):
                return Grant(nodes, config.users.get(known))
    raise Refusal(401, AUTH_REQUIRED, headers={"WWW-Authenticate": "Bearer"})  # RFC 6750: the scheme to use


async def read_json_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body as JSON bytes, inflated if gzipped; 413 once it passes ``limit`` bytes as sent or inflated,
    408 (and the connection closed) unless all of it arrives within ``timeout`` seconds."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise Refusal(415, BAD_CONTENT_TYPE)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("gzip", "identity"):
        raise Refusal(415, BAD_CONTENT_ENCODING)
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise Refusal(400, INVALID_CONTENT_LENGTH)
        if int(declared) > limit:
            raise Refusal(413, TOO_LARGE)
    body = BoundedBody(limit, gzipped=encoding == "gzip")
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body.feed(chunk)
        return body.finish()
    except TimeoutError as exc:
        raise Refusal(408, BODY_TIMEOUT, headers={"Connection": "close"}) from exc
    except DecompressionLimitError as exc:
        raise Refusal(413, TOO_LARGE) from exc
    except zlib.error as exc:
        raise Refusal(400, INVALID_GZIP) from exc
    except ClientDisconnect as exc:  # nobody will read the answer, but it must not be logged as a 500
        raise Refusal(400, INCOMPLETE_BODY) from exc


def accepts_gzip(request: Request) -> bool:
    for item in request.headers.get("accept-encoding", "").split(","):
        name, _, params = item.partition(";")
        if name.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False

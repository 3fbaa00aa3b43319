"""What keeps slow clients and a full file table from wearing the server down.

uvicorn has no limit on how long a client may take to send a request's head:
a connection that sends nothing, or one byte a second, is kept forever (its
keep-alive timer only runs between requests and stops at the first byte). No
ASGI app sees a request before its head is complete, so the head's deadline is
kept here, in uvicorn's HTTP/1.1 protocol; the body's is kept by the app
(``reading.read_json_body``), which can still answer 408.

At the file-descriptor limit, asyncio (3.11) reports a failed ``accept()`` up
to ``backlog`` times per wake-up, each with a traceback: thousands of log
lines a second. :class:`AcceptFailureLog` makes that one line per kind of
failure per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("server_stub")

ACCEPT_LOG_INTERVAL = 10.0
"""Seconds between two log lines about the same kind of accept failure."""

ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


class _DeadlineH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose client is too slow to send.

    The deadline runs while the server waits for a request's head (from the
    connection's start, or from the first byte of a later request on it), and
    after the app answered before the body was all in (a refusal): uvicorn
    would read the rest of that body, at any pace, for ever.
    """

    header_timeout: ClassVar[float]
    body_timeout: ClassVar[float]
    _deadline: asyncio.TimerHandle | None = None
    _while: object = h11.IDLE
    """The client state the deadline is about: it ends once the client leaves it."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, h11.IDLE)

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm(self.header_timeout, h11.IDLE)  # the first bytes of a further request
        super().data_received(data)
        if self._deadline is not None and self.conn.their_state is not self._while:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self._arm(self.body_timeout, h11.SEND_BODY)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float, state: object) -> None:
        self._disarm()
        self._while = state
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            what = "request head" if self._while is h11.IDLE else "rest of a refused request's body"
            log.info("closing a connection from %s: the %s did not arrive in time", self.client, what)
            self.transport.close()


def deadline_protocol(header_timeout: float, body_timeout: float) -> type[H11Protocol]:
    """The protocol class to give uvicorn (``http=``) for these timeouts, in seconds."""
    return type("DeadlineH11Protocol", (_DeadlineH11Protocol,),
                {"header_timeout": header_timeout, "body_timeout": body_timeout})


class AcceptFailureLog:
    """An event loop exception handler: accept failures are logged as one line per kind (message,
    exception type, errno) per ``interval``, saying how many were left out; anything else goes on
    to ``fallback`` (the loop's default handler if None)."""

    def __init__(self, fallback: ExceptionHandler | None = None, interval: float = ACCEPT_LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fallback = fallback
        self.interval = interval
        self.clock = clock
        self._kinds: dict[tuple[str, str, int | None], tuple[float | None, int]] = {}
        """kind -> (when its last line was logged, how many were left out since)."""

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        exc = context.get("exception")
        if not (isinstance(exc, OSError) and "accept" in message):
            if self.fallback is None:
                loop.default_exception_handler(context)
            else:
                self.fallback(loop, context)
            return
        kind = (message, type(exc).__name__, exc.errno)
        now = self.clock()
        logged, left_out = self._kinds.get(kind, (None, 0))
        if logged is not None and now - logged < self.interval:
            self._kinds[kind] = (logged, left_out + 1)
            return
        self._kinds[kind] = (now, 0)
        more = f" ({left_out} more like it since the last such line)" if left_out else ""
        log.error("%s: %s%s", message, exc, more)

"""A transport that calls a server engine in this process, through the real JSON round trip."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..protocol.wire import SyncManifest
from .binding import (
    MANIFEST_ERRORS,
    SYNC_ABORTED,
    abort_reason,
    invalid_manifest,
    is_refusal,
    read_response_body,
    refused,
    response_json,
)

if TYPE_CHECKING:
    from ..engine.engine import DatabaseEngine


class InProcessTransport:
    """``exchange`` serialises the manifest to JSON, lets ``server.process`` answer, and parses the answer back.

    Going through JSON both ways means tests see exactly what would cross the
    wire: no shared objects, the checksum checked on real bytes. Refusals
    carry the status and text ``server_stub`` would answer; the exception
    keeps its precise type (a drift refusal is a :class:`ClockDriftError` with
    ``status`` 409), which HTTP can only report as :class:`SyncAbortedError`.
    """

    def __init__(self, server: DatabaseEngine) -> None:
        self.server = server

    def exchange(self, manifest: SyncManifest) -> SyncManifest:
        return self.decode(self.send(manifest))

    def send(self, manifest: SyncManifest) -> bytes:
        """The server's answer to ``manifest`` as the bytes of its JSON."""
        request = json.loads(manifest.to_json())
        try:
            incoming = SyncManifest.from_dict(request)
        except MANIFEST_ERRORS as exc:
            raise refused(400, invalid_manifest(exc)) from exc
        try:
            response, result = self.server.process(incoming)
        except MANIFEST_ERRORS as exc:  # a value the server's storage cannot hold
            raise refused(400, invalid_manifest(exc)) from exc
        except Exception as exc:
            if not is_refusal(exc):
                raise
            raise refused(409, SYNC_ABORTED, abort_reason(exc), str(exc)) from exc
        return response_json(response, result).encode("ascii")

    def decode(self, body: bytes) -> SyncManifest:
        """The manifest of an answer, validated and its checksum verified."""
        return read_response_body(body)

    def close(self) -> None:
        """Nothing to release; present so every transport can be closed alike."""

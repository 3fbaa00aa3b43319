"""A transport that calls a server engine in this process, through the real JSON round trip."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..errors import InvalidResponseError, ManifestFieldError, RecordFieldError, SyncAbortedError
from ..protocol.wire import SyncManifest

if TYPE_CHECKING:
    from ..engine.engine import DatabaseEngine


class InProcessTransport:
    """``exchange`` serialises the manifest to JSON, lets ``server.process`` answer, and parses the answer back.

    Going through JSON both ways means tests see exactly what would cross the
    wire: no shared objects, the checksum checked on real bytes.
    """

    def __init__(self, server: DatabaseEngine) -> None:
        self.server = server

    def exchange(self, manifest: SyncManifest) -> SyncManifest:
        request = json.loads(json.dumps(manifest.to_dict()))
        try:
            incoming = SyncManifest.from_dict(request)
        except (ManifestFieldError, RecordFieldError) as exc:
            raise SyncAbortedError(f"server refused the manifest: {exc}", status=400, server_error=str(exc)) from exc
        response, result = self.server.process(incoming)
        body = response.to_dict()
        body.update(ok=result.ok, errors=result.errors, skipped=result.count("skipped"))
        try:
            return SyncManifest.from_dict(json.loads(json.dumps(body)))
        except (ManifestFieldError, RecordFieldError) as exc:
            raise InvalidResponseError(f"invalid response manifest: {exc}") from exc

    def close(self) -> None:
        """Nothing to release; present so every transport can be closed alike."""

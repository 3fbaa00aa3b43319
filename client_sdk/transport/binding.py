"""The HTTP binding of PROTOCOL.md section 5, minus the HTTP: what a server answers and how a client reads it.

This module is the declared seam between the client transports and any server
built on this package: ``server_stub`` and :class:`InProcessTransport` build
answers and refusals here, and both client transports read answers here, so an
in-process sync sees the same statuses, texts and checks as one over the
network. Its ``__all__`` is what a server may use.
"""

from __future__ import annotations

from ..engine.results import DatabaseResult
from ..errors import (
    ClockDriftError,
    ClockOverflowError,
    InvalidResponseError,
    LockContentionError,
    ManifestChecksumError,
    ManifestFieldError,
    RecordFieldError,
    SyncAbortedError,
)
from ..protocol.gcpause import gc_paused
from ..protocol.sealed import parse_sealed
from ..protocol.wire import SyncManifest

__all__ = [
    "ABORT_REASONS",
    "AUTH_REQUIRED",
    "BAD_CONTENT_ENCODING",
    "BAD_CONTENT_TYPE",
    "INCOMPLETE_BODY",
    "INVALID_CONTENT_LENGTH",
    "INVALID_GZIP",
    "INVALID_JSON",
    "MANIFEST_ERRORS",
    "NODE_FORBIDDEN",
    "NOT_ALLOWED",
    "NOT_AN_OBJECT",
    "SYNC_ABORTED",
    "TOO_LARGE",
    "abort_reason",
    "invalid_manifest",
    "is_refusal",
    "read_response",
    "read_response_body",
    "refused",
    "response_json",
]

INVALID_JSON = "Invalid JSON in request body"
NOT_AN_OBJECT = "Request body must be a JSON object"
INVALID_GZIP = "Invalid gzip in request body"
INVALID_CONTENT_LENGTH = "Invalid Content-Length header"
INCOMPLETE_BODY = "Request body incomplete"
BAD_CONTENT_TYPE = "Content-Type must be application/json"
BAD_CONTENT_ENCODING = "Content-Encoding must be gzip or identity"
TOO_LARGE = "Request body too large"
AUTH_REQUIRED = "Missing or invalid bearer token"
NODE_FORBIDDEN = "This token may not sync as this node_id"
NOT_ALLOWED = "Method not allowed"
SYNC_ABORTED = "Sync aborted"

MANIFEST_ERRORS = (ManifestFieldError, RecordFieldError)


def invalid_manifest(exc: object) -> str:
    """The 400 text for a request manifest that fails validation."""
    return f"Invalid manifest: {exc}"


def is_refusal(exc: BaseException) -> bool:
    """``process`` refused the round (answered 409): checksum, drift, lock contention, clock overflow."""
    return isinstance(exc, (SyncAbortedError, ClockOverflowError))


def response_json(response: SyncManifest, result: DatabaseResult) -> str:
    """The 200 body: the server's manifest plus ``ok``, ``errors`` and ``skipped``."""
    return response.to_json(ok=result.ok, errors=result.errors, skipped=result.count("skipped"))


ABORT_REASONS: dict[str, type[SyncAbortedError]] = {
    "clock_drift": ClockDriftError,
    "checksum": ManifestChecksumError,
    "lock_contention": LockContentionError,
}
"""A 409 body may add ``reason`` (one of these) and ``detail`` to ``error``: the existing server's
clients ignore the extra keys, ours raise the precise exception with the server's explanation."""


def abort_reason(exc: BaseException) -> str | None:
    return next((reason for reason, kind in ABORT_REASONS.items() if isinstance(exc, kind)), None)


def refused(status: int, text: str, reason: object = None, detail: object = None) -> SyncAbortedError:
    """What a client raises for a 4xx answer: ``status`` and the server's text ride on the exception."""
    kind = ABORT_REASONS.get(reason, SyncAbortedError) if isinstance(reason, str) else SyncAbortedError
    explained = f"{text}: {detail}" if isinstance(detail, str) and detail else text
    return kind(f"server refused the sync (HTTP {status}): {explained}", status=status, server_error=text)


def read_response_body(body: bytes) -> SyncManifest:
    """Decode, validate and verify a 200 body as received."""
    with gc_paused():  # and the decoded JSON, which the manifest does not keep, is freed before it ends
        return _read_body(body)


def _read_body(body: bytes) -> SyncManifest:
    try:
        raw, covered_digest = parse_sealed(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidResponseError(f"response is not JSON: {exc}") from exc
    return read_response(raw, covered_digest)


def read_response(raw: object, covered_digest: str | None = None) -> SyncManifest:
    """Validate a decoded 200 body and verify its checksum; nothing from it may be applied otherwise."""
    if not isinstance(raw, dict):
        raise InvalidResponseError(f"response is not a JSON object but {type(raw).__name__}")
    missing = [name for name in ("node_id", "checkpoint") if name not in raw]
    if missing:
        raise InvalidResponseError(f"response has no {' or '.join(missing)}")
    try:
        # the existing server may list a key both in records and deletes: the engine settles it by stamps
        manifest = SyncManifest.from_dict(raw, covered_digest=covered_digest, overlapping=True)
    except MANIFEST_ERRORS as exc:
        raise InvalidResponseError(f"invalid response manifest: {exc}") from exc
    except RecursionError as exc:
        raise InvalidResponseError("invalid response manifest: data nested too deeply") from exc
    manifest.verify_checksum()
    return manifest

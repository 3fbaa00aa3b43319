"""One exception tree for everything the SDK raises (PROTOCOL.md section 13)."""

from __future__ import annotations


class SyncError(Exception):
    """Root of every error raised by the SDK."""


class SyncAbortedError(SyncError):
    """A sync round was aborted: nothing from it was applied.

    ``status`` and ``server_error`` are set when the abort came from an HTTP
    refusal (a 4xx answer); they are ``None`` otherwise.
    """

    def __init__(self, message: str, *, status: int | None = None, server_error: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.server_error = server_error


class ConnectionSetupError(SyncAbortedError):
    """The server cannot be reached in a way retrying would not fix, so the transport did not retry:
    the sync URL's host name does not resolve, or TLS cannot be set up (an https URL to a plain-HTTP
    server, a certificate that does not verify). The message says which and what to check."""


class ClockDriftError(SyncAbortedError):
    """The peer's wall clock is further from ours than ``clock_drift_max``."""


class InvalidResponseError(SyncAbortedError):
    """The server answered with something that is not a valid manifest."""


class LockContentionError(SyncAbortedError):
    """Another sync of the same database is already running."""


class ManifestChecksumError(SyncAbortedError):
    """A manifest's checksum is missing or does not match its content."""


class PayloadLimitError(SyncAbortedError):
    """A manifest would exceed ``payload_records_max`` or ``payload_bytes_max``."""


class RetryExhaustedError(SyncAbortedError):
    """The transport gave up after its retries."""


class ClockOverflowError(SyncError):
    """The HLC counter ran out and the wall clock did not move in time."""


class ConflictStateError(SyncError):
    """A resolver returned something that cannot be applied."""


class CircularDependencyError(SyncError):
    """The model dependency graph has a cycle."""


class DecompressionLimitError(SyncError):
    """A compressed body inflates past the allowed size (a gzip bomb)."""


class InvalidParameterError(SyncError, ValueError):
    """An argument given to the SDK is out of range or of the wrong type."""


class ManifestFieldError(SyncError):
    """A manifest (or one of its payloads) is malformed; the field is named."""


class RecordFieldError(SyncError):
    """A record inside a payload is malformed; the key and field are named."""


class StorageError(SyncError):
    """The database file could not be read or written (read-only, disk full, corrupt, locked for too
    long). The message names the file and SQLite's reason; the operation that failed changed nothing.
    ``path`` is the file (None for an in-memory database); the ``sqlite3`` error is the ``__cause__``."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class DatabaseLockedError(StorageError):
    """Another connection held the database's write lock for longer than the busy timeout."""


class TransportRequiredError(SyncError):
    """``sync()`` was called on an engine that has no transport."""


class UnknownDependencyError(SyncError):
    """A model depends on a label that is not in the graph."""


class UnknownModelError(SyncError):
    """A model label (or table) that this node does not know."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`InvalidParameterError` with ``message`` unless ``condition`` holds (argument checks)."""
    if not condition:
        raise InvalidParameterError(message)

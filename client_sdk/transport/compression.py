"""Gzip both ways, with a hard bound on what a body may inflate to.

Shared by the client transport (responses) and ``server_stub`` (requests):
a small gzip body can expand a thousandfold, so inflating is done in steps
that never hold more than ``limit + 1`` output bytes.
"""

from __future__ import annotations

import zlib

from ..errors import DecompressionLimitError, InvalidParameterError

GZIP_LEVEL = 3
"""On sync JSON: half the CPU of level 5 for 10% more bytes (the last fast level; 4 costs what 5 does)."""

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_MIN_WBITS = 9


def gzip_bytes(data: bytes, level: int = GZIP_LEVEL) -> bytes:
    """A single gzip member (what ``Content-Encoding: gzip`` carries).

    A body shorter than zlib's 32 KiB window gets a window (and state) of its
    own size: as small a result, without setting up the ~256 KiB compressor
    state zlib takes by default, which cost more than compressing a request
    of a few hundred bytes. Any gzip reader inflates it.
    """
    window = min(zlib.MAX_WBITS, max(_MIN_WBITS, (len(data) - 1).bit_length()))
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + window, max(1, window - 7))
    return compressor.compress(data) + compressor.flush()


class BoundedInflater:
    """Inflate a gzip stream fed in chunks; raise past ``limit`` output bytes.

    ``feed`` as the compressed bytes arrive, then ``finish`` for the whole
    output. Concatenated gzip members are accepted, as ``gzip.decompress``
    does. A corrupt or truncated stream raises ``zlib.error``.
    """

    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidParameterError(f"limit must be a non-negative integer, got {limit!r}")
        self.limit = limit
        self._out = bytearray()
        self._inflater = zlib.decompressobj(_GZIP_WBITS)

    def feed(self, data: bytes) -> None:
        while data:
            if self._inflater.eof:
                # The next gzip member starts in the bytes the previous one left over.
                self._inflater = zlib.decompressobj(_GZIP_WBITS)
            room = self.limit - len(self._out) + 1
            self._out += self._inflater.decompress(data, room)
            if len(self._out) > self.limit:
                raise DecompressionLimitError(f"gzip body inflates past the limit of {self.limit} bytes")
            data = self._inflater.unconsumed_tail or self._inflater.unused_data

    def finish(self) -> bytes:
        if not self._inflater.eof:
            raise zlib.error("gzip stream is truncated")
        return bytes(self._out)


class BodyTooLarge(DecompressionLimitError):
    """The body itself, as received, is over the limit (before any inflating)."""


class BoundedBody:
    """Collects a body arriving in chunks: at most ``limit`` bytes as received and, gzipped, once inflated.

    Raises :class:`BodyTooLarge` or :class:`DecompressionLimitError` past the
    limit, and ``zlib.error`` for a corrupt or truncated gzip stream.
    """

    def __init__(self, limit: int, *, gzipped: bool) -> None:
        self.limit = limit
        self.received = 0
        self._plain = bytearray()
        self._inflater = BoundedInflater(limit) if gzipped else None

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.limit:
            raise BodyTooLarge(f"body exceeds {self.limit} bytes")
        if self._inflater is None:
            self._plain += chunk
        else:
            self._inflater.feed(chunk)

    def finish(self) -> bytes:
        return bytes(self._plain) if self._inflater is None else self._inflater.finish()


def inflate(data: bytes, limit: int) -> bytes:
    """Decompress a whole gzip body of at most ``limit`` inflated bytes."""
    inflater = BoundedInflater(limit)
    inflater.feed(data)
    return inflater.finish()

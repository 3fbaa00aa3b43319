"""Reading the bodies :meth:`SyncManifest.to_json` writes without encoding or decoding them twice.

A sealed manifest goes on the wire as the canonical text of its covered keys
(the text its checksum hashed), less the closing brace, then the other keys,
compact and starting with ``after_keys``. Canonical JSON separates with ``", "``
and escapes the quotes inside strings, so it never holds the bytes ``],"``: the
seam ``],"after_keys":`` is where the two parts meet, and it is looked for from
the end, past the few bytes of the other keys instead of the whole page of
records. Bodies in any other layout are read the ordinary way.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ManifestFieldError
from .wire import CHECKSUM_KEYS, AfterKeys, parse_after_keys, parse_json

_SEAM = b'],"after_keys":'
_CHECKPOINT = re.compile(rb'\{"checkpoint": (\d{1,20}), ')


def _seam(body: bytes) -> int | None:
    """Index of the ``]`` closing the covered ``payloads`` list, if the body is laid out as sealed."""
    end = body.rfind(_SEAM)
    return end if end > 0 and body.startswith(b'{"checkpoint": ') else None


def parse_sealed(body: bytes) -> tuple[Any, str | None]:
    """Decode a manifest body; also return the sha256 of its covered part if the body starts with it as
    the canonical text its checksum was computed from, else None.

    The body is then decoded as two objects, the covered keys and the rest, so
    the digest is of exactly the text the covered values were decoded from.
    """
    end = _seam(body)
    if end is not None:
        covered_text = body[: end + 1] + b"}"
        covered, rest = parse_json(covered_text), parse_json(b"{" + body[end + 2 :])
        if isinstance(covered, dict) and isinstance(rest, dict) and covered.keys() == set(CHECKSUM_KEYS) \
                and rest.keys().isdisjoint(CHECKSUM_KEYS) and covered_text.isascii():
            digest = hashlib.sha256(covered_text).hexdigest()
            if digest == rest.get("checksum"):
                return covered | rest, digest
    return parse_json(body), None


@dataclass(frozen=True)
class Preview:
    """What the next pull needs from an answer, read without decoding its records. Unverified: the
    answer is checked when it is decoded, and a pull sent on a wrong preview only reads."""

    checkpoint: int
    after_keys: AfterKeys
    has_more: bool
    empty: bool
    """No payloads."""

    @property
    def settles(self) -> bool:
        """Nothing in this answer and nothing more to come (as the decoded answer would tell)."""
        return self.empty and not self.has_more


def preview_sealed(body: bytes) -> Preview | None:
    """The :class:`Preview` of a sealed body; None for any other layout or anything malformed."""
    end = _seam(body)
    checkpoint = _CHECKPOINT.match(body)
    if end is None or checkpoint is None:
        return None
    try:
        rest = parse_json(b"{" + body[end + 2 :])
        if not isinstance(rest, dict) or not isinstance(rest.get("has_more"), bool):
            return None
        after_keys = parse_after_keys(rest.get("after_keys", {}))
    except (ValueError, RecursionError, ManifestFieldError):
        return None
    empty = body.endswith(b'"payloads": []', 0, end + 1)
    return Preview(int(checkpoint.group(1)), after_keys, rest["has_more"], empty)

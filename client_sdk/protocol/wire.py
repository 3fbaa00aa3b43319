"""The wire types: records, model payloads and manifests (PROTOCOL.md sections 2-4).

``from_dict`` validates everything it reads and raises :class:`RecordFieldError`
or :class:`ManifestFieldError` naming the offending field; a manifest that fails
is rejected whole. ``to_dict`` produces exactly what goes on the wire.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from itertools import chain, repeat
from json.encoder import encode_basestring_ascii
from operator import attrgetter
from typing import Any, Required, TypedDict, TypeGuard

from ..errors import InvalidParameterError, ManifestChecksumError, ManifestFieldError, RecordFieldError
from .hlc import HLC_MAX
from .page import RecordPage, page_columns, uniform_columns

META_FIELDS = frozenset({"sync_field_timestamps", "sync_field_last_modified"})
"""Server bookkeeping that may appear inside ``data``; never user data."""

PAYLOADS_MAX = 100
CHECKSUM_KEYS = ("checkpoint", "node_id", "node_time", "payloads")

JsonDict = dict[str, Any]


class WireCursor(TypedDict):
    """Where a model's paging stands, as ``after_keys`` carries it: the last row sent, in
    (last_modified, key) order."""

    key: str
    timestamp: int


AfterKeys = dict[str, WireCursor]


class RecordError(TypedDict, total=False):
    """One key's refusal, as an answer lists it beside the manifest (PROTOCOL.md 5: ``errors``) and
    a sync's result collects it; ``model_label`` names the model where it is known."""

    key: Required[str]
    message: Required[str]
    model_label: str


def record_error(label: str, key: str, message: str) -> RecordError:
    return {"key": key, "model_label": label, "message": message}
"""``after_keys``: model label -> its cursor."""


def is_stamp(value: object) -> TypeGuard[int]:
    """A non-negative 64-bit integer (a bool is not an integer here)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= HLC_MAX


def is_text(value: object) -> bool:
    """A string UTF-8 can encode: no lone surrogate, which a ``\\ud800``-``\\udfff`` escape (or those
    code points' bytes, which ``json.loads`` passes through) makes. SQLite cannot store one."""
    if not isinstance(value, str):
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


NOT_TEXT = "valid Unicode text (no lone surrogate)"


def _manifest_error(path: str, expected: str, value: object) -> ManifestFieldError:
    return ManifestFieldError(_escaped(f"{path}: expected {expected}, got {_show(value)}"))


def _record_error(label: str, key: object, path: str, expected: str, value: object) -> RecordFieldError:
    return RecordFieldError(_escaped(f"{label} record {_show(key)}: {path}: expected {expected}, got {_show(value)}"))


def _escaped(message: str) -> str:
    """``message`` with any lone surrogate (from a name it quotes) written as its escape, so that the
    error can be encoded wherever it goes: a 400 body, a log, a terminal."""
    return message if is_text(message) else message.encode("utf-8", "backslashreplace").decode("utf-8")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(init=False)
class SyncRecord:
    """One row of one model: its ``key``, the whole ``data`` and the full per-field stamp map.

    ``SyncRecord(key, data, timestamps, received_at=0)``, as the existing
    engine's. ``received_at`` is node-local (when a server stored the row) and
    never sent. The key travels as the record's key in its payload, not inside
    the record; :meth:`from_dict` sets it. Equality compares ``data`` and
    ``timestamps`` only: neither where the row was received nor under which key
    it is held (a record is compared where its key already matched).

    ``key`` may be ``""`` for a record whose key is not at hand.
    """

    key: str = field(compare=False)
    data: JsonDict
    timestamps: dict[str, int]
    received_at: int = field(default=0, compare=False)

    def __init__(self, key: str, data: JsonDict, timestamps: dict[str, int], received_at: int = 0) -> None:
        self.key = key
        self.data = data
        self.timestamps = timestamps
        self.received_at = received_at
        if received_at < 0 or not isinstance(key, str):  # what __post_init__ refuses, tested here for speed
            self.__post_init__()

    def __post_init__(self) -> None:
        """Refuse a key that is not a string and a negative ``received_at`` (:class:`InvalidParameterError`)."""
        if not isinstance(self.key, str):
            raise InvalidParameterError(f"SyncRecord key must be a string, got {_show(self.key)}")
        if self.received_at < 0:
            raise InvalidParameterError(f"received_at must be non-negative, got {self.received_at}")

    @property
    def sync_field_last_modified(self) -> int:
        """When the row last changed here: its newest field stamp, or when a server stored it if later
        (PROTOCOL.md 2: ``max(max(timestamps), received_at)``)."""
        return max(max(self.timestamps.values(), default=0), self.received_at)

    last_modified = sync_field_last_modified
    """Alias of :attr:`sync_field_last_modified`."""

    @property
    def is_ghost(self) -> bool:
        return not self.timestamps

    @property
    def canonical_text(self) -> str | None:
        """The canonical JSON of :meth:`to_dict` when it is already at hand, else None. (A storage
        may make it for a whole page of rows it serves; see ``sqlite/served.py``.)"""
        return None

    def user_data(self) -> JsonDict:
        """``data`` without the server meta fields."""
        return {k: v for k, v in self.data.items() if k not in META_FIELDS}

    def to_dict(self, *, with_received_at: bool = False) -> JsonDict:
        out: JsonDict = {"data": self.data, "timestamps": self.timestamps}
        if with_received_at:
            out["received_at"] = self.received_at
        return out

    @classmethod
    def from_dict(cls, key: str, data: JsonDict, *, label: str = "") -> SyncRecord:
        """Validate the record ``data`` (``{"data": ..., "timestamps": ...}``, as on the wire) held under
        ``key``; raise :class:`RecordFieldError` naming the field, and ``label`` (the model) if given."""
        if not isinstance(key, str) or not key:
            raise _record_error(label, key, "key", "a non-empty string", key)
        if not is_text(key):
            raise _record_error(label, key, "key", NOT_TEXT, key)
        if not isinstance(data, dict):
            raise _record_error(label, key, "record", "an object", data)
        values = data.get("data")
        if not isinstance(values, dict):
            raise _record_error(label, key, "data", "an object", values)
        stamps = data.get("timestamps")
        if not isinstance(stamps, dict):
            raise _record_error(label, key, "timestamps", "an object", stamps)
        for name, stamp in stamps.items():
            if not isinstance(name, str):
                raise _record_error(label, key, "timestamps", "string field names", name)
            if not is_stamp(stamp):
                raise _record_error(label, key, f"timestamps.{name}", "a non-negative 64-bit integer", stamp)
        received_at = data.get("received_at", 0)
        if not is_stamp(received_at):
            raise _record_error(label, key, "received_at", "a non-negative 64-bit integer", received_at)
        return cls(key, values, stamps, received_at)


@dataclass
class ModelPayload:
    """The records and tombstones of one model in one manifest."""

    model_label: str
    records: dict[str, SyncRecord] = field(default_factory=dict)
    deletes: dict[str, int] = field(default_factory=dict)
    _encoded: str | None = field(default=None, init=False, repr=False, compare=False)
    """The canonical JSON, when :meth:`encode_ahead` made it (the payload is not to change after)."""

    def __len__(self) -> int:
        return len(self.records) + len(self.deletes)

    def encode_ahead(self) -> None:
        """Make the canonical JSON now, while there is time (a client waiting for the server's answer
        to the page before), so that sealing the manifest later only hashes it."""
        self._encoded = self._canonical_text() or _canonical_json(self.to_dict())

    def max_stamp(self) -> int:
        """The largest stamp this payload carries (record last_modified or tombstone)."""
        columns = page_columns(self.records)
        if columns is not None:  # a decoded page: no received_at, and each record's newest stamp at hand
            return max(max(columns.newest), max(self.deletes.values(), default=0))
        records = self.records.values()
        stamps = chain.from_iterable(map(dict.values, map(attrgetter("timestamps"), records)))
        received = max(map(attrgetter("received_at"), records), default=0)
        return max(max(stamps, default=0), received, max(self.deletes.values(), default=0))

    def _canonical_text(self) -> str | None:
        """The canonical JSON of :meth:`to_dict`, put together from its records' own texts if every
        record has one at hand (see :attr:`SyncRecord.canonical_text`), else None."""
        if self._encoded is not None:
            return self._encoded
        texts = [record.canonical_text for record in self.records.values()]
        if not texts or not _all_text(texts) or set(map(type, self.records)) != {str}:
            return None
        keys, ordered = zip(*sorted(zip(self.records, texts, strict=True)), strict=True)  # by key, as sort_keys orders them
        records = ", ".join(map("%s: %s".__mod__, zip(map(encode_basestring_ascii, keys), ordered, strict=True)))
        deletes, label = _canonical_json(dict(self.deletes)), _canonical_json(self.model_label)
        return f'{{"deletes": {deletes}, "model_label": {label}, "records": {{{records}}}}}'

    def to_dict(self) -> JsonDict:
        return {
            "model_label": self.model_label,
            "records": {key: record.to_dict() for key, record in self.records.items()},
            "deletes": dict(self.deletes),
        }

    @classmethod
    def from_dict(cls, data: JsonDict, *, index: int = 0, overlapping: bool = False) -> ModelPayload:
        """Validate one decoded payload (``index``: its place in the manifest, for the error messages).

        A key may not be both in ``records`` and ``deletes``, unless ``overlapping``: the existing
        server sends that shape (PROTOCOL.md 14), so a client reading answers must take it and settle
        it by stamps (see ``settle_overlaps``)."""
        where = f"payloads[{index}]"
        if not isinstance(data, dict):
            raise _manifest_error(where, "an object", data)
        label = data.get("model_label")
        if not isinstance(label, str) or not label:
            raise _manifest_error(f"{where}.model_label", "a non-empty string", label)
        if not is_text(label):
            raise _manifest_error(f"{where}.model_label", NOT_TEXT, label)
        raw_records = data.get("records", {})
        if not isinstance(raw_records, dict):
            raise _manifest_error(f"{where}.records", "an object", raw_records)
        raw_deletes = data.get("deletes", {})
        if not isinstance(raw_deletes, dict):
            raise _manifest_error(f"{where}.deletes", "an object", raw_deletes)
        for key, stamp in raw_deletes.items():
            if not key:
                raise _manifest_error(f"{where}.deletes", "non-empty keys", key)
            if not is_text(key):
                raise _manifest_error(f"{where}.deletes", f"keys of {NOT_TEXT}", key)
            if not is_stamp(stamp):
                raise _manifest_error(f"{where}.deletes.{key}", "a non-negative 64-bit integer", stamp)
        both = raw_records.keys() & raw_deletes.keys()
        if both and not overlapping:
            raise _manifest_error(f"{where}", "no key both in records and deletes", sorted(both)[0])
        records = _plain_records(raw_records)
        if records is None:  # something is off: the record-by-record pass names the first offender
            records = {key: SyncRecord.from_dict(key, record, label=label) for key, record in raw_records.items()}
        return cls(model_label=label, records=records, deletes=dict(raw_deletes))


def _plain_records(raw_records: dict[Any, Any]) -> dict[str, SyncRecord] | None:
    """The records, if every one is exactly what ``json.loads`` makes of a valid record; else None.

    The fast path of :meth:`ModelPayload.from_dict`: it accepts a subset of what
    :meth:`SyncRecord.from_dict` accepts (no ``received_at``), checked for the
    whole payload at once instead of field by field. Records that all carry the
    same fields come as a :class:`RecordPage`, with their columns.
    """
    raws = list(raw_records.values())
    if not raws:
        return {}
    if set(map(type, raw_records)) != {str} or "" in raw_records or set(map(type, raws)) != {dict}:
        return None
    if not is_text("".join(raw_records)):
        return None
    if any(map(dict.__contains__, raws, repeat("received_at"))):
        return None
    datas = list(map(dict.get, raws, repeat("data")))
    maps = list(map(dict.get, raws, repeat("timestamps")))
    if not _all_dicts(datas) or not _all_dicts(maps):
        return None
    columns = uniform_columns(datas, maps)
    if columns is not None:
        return RecordPage(zip(raw_records, map(SyncRecord, raw_records, datas, maps), strict=True), columns)
    names = set(map(type, chain.from_iterable(maps)))
    stamps = list(chain.from_iterable(map(dict.values, maps)))
    if stamps and (names != {str} or set(map(type, stamps)) != {int} or min(stamps) < 0 or max(stamps) > HLC_MAX):
        return None
    return dict(zip(raw_records, map(SyncRecord, raw_records, datas, maps), strict=True))


def _all_dicts(values: list[Any]) -> TypeGuard[list[dict[Any, Any]]]:
    """Whether every one of ``values`` is exactly a ``dict``, as ``json.loads`` makes an object."""
    return set(map(type, values)) == {dict}


def parse_json(body: bytes | str) -> Any:
    """JSON as Python reads it. Raises ``ValueError`` (or ``RecursionError`` for absurd nesting).

    Non-finite numbers are not JSON, but a number too large for a double (``-1e400``) is, and Python
    reads it as one; the literals ``NaN``, ``Infinity`` and ``-Infinity`` are read as such too, so
    that both kinds are found in the same place: wherever the protocol wants an integer, a string or
    a boolean they fail its check, and in a record's values the engine refuses the record, per key
    (``engine._record_problems``). One bad value costs its record, not the whole request or answer.
    """
    return json.loads(body, parse_constant=_NON_FINITE.__getitem__)


_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def checksum_of(body: JsonDict) -> str:
    """sha256 of the canonical JSON of the four covered keys (PROTOCOL.md section 4)."""
    return _sha256(_canonical_json({k: body.get(k) for k in CHECKSUM_KEYS}))


def _canonical_json(covered: object) -> str:
    return json.dumps(covered, sort_keys=True, ensure_ascii=True)


def _all_text(texts: list[str | None]) -> TypeGuard[list[str]]:
    """Whether every canonical text is at hand (none is None)."""
    return None not in texts


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@dataclass
class SyncManifest:
    """One side of one round: what a node sends, or what a server answers."""

    node_id: str
    checkpoint: int
    after_keys: AfterKeys = field(default_factory=dict)
    checksum: str = ""
    """Empty until :meth:`seal` (or as received); sent as ``null`` while empty."""
    has_more: bool = False
    node_time: int = 0
    payloads: list[ModelPayload] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list, kw_only=True)
    """Per-key errors a server reports beside its manifest (HTTP ``errors``); not covered by the checksum."""
    _wire_checksum: str | None = field(default=None, repr=False, compare=False, kw_only=True)
    _sealed_json: str | None = field(default=None, repr=False, compare=False, kw_only=True)
    """The canonical JSON :meth:`seal` hashed; :meth:`to_json` reuses it."""

    def payload(self, label: str) -> ModelPayload | None:
        return next((p for p in self.payloads if p.model_label == label), None)

    @property
    def change_count(self) -> int:
        """How many records and tombstones the manifest carries."""
        return sum(len(p) for p in self.payloads)

    def max_stamp(self) -> int:
        """The largest stamp in the manifest: its checkpoint or any record or tombstone."""
        return max([self.checkpoint, *(p.max_stamp() for p in self.payloads)])

    def compute_checksum(self) -> str:
        return checksum_of(self._checksum_body())

    def seal(self) -> SyncManifest:
        """Set ``checksum`` from the current content and return self. A sealed manifest is final:
        :meth:`to_json` sends the content as sealed (seal again after changing it)."""
        self._sealed_json = self._canonical_text()
        self.checksum = self._wire_checksum = _sha256(self._sealed_json)
        return self

    @property
    def covered_size(self) -> int:
        """Length of the canonical text of the covered keys (what the checksum hashes): the records
        take less than this on the wire, compact or not."""
        return len(self._sealed_json or _canonical_json(self._checksum_body()))

    def verify(self) -> bool:
        """Whether the manifest has a checksum and it matches the content (as received, for a manifest
        read by :meth:`from_dict`). :meth:`verify_checksum` raises instead, saying what is wrong."""
        return bool(self.checksum) and self.checksum == (self._wire_checksum or self.compute_checksum())

    def verify_checksum(self) -> None:
        """Raise :class:`ManifestChecksumError` unless :meth:`verify`."""
        expected = self._wire_checksum or self.compute_checksum()
        if not self.checksum:
            raise ManifestChecksumError("manifest has no checksum")
        if self.checksum != expected:
            raise ManifestChecksumError(f"manifest checksum mismatch: got {self.checksum}, content hashes to {expected}")

    def _canonical_text(self) -> str:
        """The canonical JSON of the covered keys, reusing the payloads' own texts where they have them."""
        texts = [payload._canonical_text() for payload in self.payloads]
        if not _all_text(texts):
            return _canonical_json(self._checksum_body())
        head = _canonical_json({"checkpoint": self.checkpoint, "node_id": self.node_id, "node_time": self.node_time})
        return f'{head[:-1]}, "payloads": [{", ".join(texts)}]}}'

    def _checksum_body(self) -> JsonDict:
        return {
            "checkpoint": self.checkpoint,
            "node_id": self.node_id,
            "node_time": self.node_time,
            "payloads": [p.to_dict() for p in self.payloads],
        }

    def _uncovered(self) -> JsonDict:
        return {
            "after_keys": {label: dict(cursor) for label, cursor in self.after_keys.items()},
            "has_more": self.has_more,
            "checksum": self.checksum or None,
        }

    def to_dict(self) -> JsonDict:
        return self._checksum_body() | self._uncovered()

    def to_json(self, **extra: Any) -> str:
        """The wire JSON of :meth:`to_dict` plus ``extra`` top-level keys, ASCII only.

        A sealed manifest's records are not encoded again: the canonical text
        its checksum was computed from is the start of the body, and ``after_keys``
        comes right after it (``sealed.py`` finds the seam by it).
        """
        if self._sealed_json is None:
            return json.dumps(self.to_dict() | extra, separators=(",", ":"))
        rest = json.dumps(self._uncovered() | extra, separators=(",", ":"))
        return f"{self._sealed_json[:-1]},{rest[1:]}"

    @classmethod
    def from_dict(cls, data: JsonDict, *, covered_digest: str | None = None, overlapping: bool = False) -> SyncManifest:
        """Validate ``data`` (a decoded manifest). ``covered_digest``: the sha256 of the covered keys'
        canonical text as it was received (see :func:`parse_sealed`), which spares encoding them again.
        ``overlapping``: payloads may list a key both in records and deletes (answers only)."""
        if not isinstance(data, dict):
            raise _manifest_error("manifest", "an object", data)
        node_id = data.get("node_id")
        if not isinstance(node_id, str) or not node_id:
            raise _manifest_error("node_id", "a non-empty string", node_id)
        if not is_text(node_id):
            raise _manifest_error("node_id", NOT_TEXT, node_id)
        checkpoint = data.get("checkpoint")
        if not is_stamp(checkpoint):
            raise _manifest_error("checkpoint", "a non-negative 64-bit integer", checkpoint)
        node_time = data.get("node_time", 0)
        if not is_stamp(node_time):
            raise _manifest_error("node_time", "a non-negative integer (unix seconds)", node_time)
        raw_payloads = data.get("payloads", [])
        if not isinstance(raw_payloads, list):
            raise _manifest_error("payloads", "a list", raw_payloads)
        if len(raw_payloads) > PAYLOADS_MAX:
            raise _manifest_error("payloads", f"at most {PAYLOADS_MAX} payloads", len(raw_payloads))
        payloads = [ModelPayload.from_dict(p, index=i, overlapping=overlapping) for i, p in enumerate(raw_payloads)]
        labels = [p.model_label for p in payloads]
        if len(set(labels)) != len(labels):
            duplicate = next(label for label in labels if labels.count(label) > 1)
            raise _manifest_error("payloads", "unique model labels", duplicate)
        after_keys = parse_after_keys(data.get("after_keys", {}))
        has_more = data.get("has_more", False)
        if not isinstance(has_more, bool):
            raise _manifest_error("has_more", "a boolean", has_more)
        checksum = data.get("checksum")
        if checksum is not None and not isinstance(checksum, str):
            raise _manifest_error("checksum", "a hex string", checksum)
        errors = _parse_errors(data.get("errors", []))
        return cls(
            node_id=node_id,
            checkpoint=checkpoint,
            node_time=node_time,
            payloads=payloads,
            after_keys=after_keys,
            has_more=has_more,
            checksum=checksum or "",
            errors=errors,
            _wire_checksum=covered_digest or checksum_of(data),
        )


def parse_after_keys(raw: object) -> AfterKeys:
    if not isinstance(raw, dict):
        raise _manifest_error("after_keys", "an object", raw)
    cursors: AfterKeys = {}
    for label, cursor in raw.items():
        if not is_text(label):
            raise _manifest_error("after_keys", f"labels of {NOT_TEXT}", label)
        if not isinstance(cursor, dict):
            raise _manifest_error(f"after_keys.{label}", "an object", cursor)
        key, stamp = cursor.get("key"), cursor.get("timestamp")
        if not isinstance(key, str):
            raise _manifest_error(f"after_keys.{label}.key", "a string", key)
        if not is_text(key):
            raise _manifest_error(f"after_keys.{label}.key", NOT_TEXT, key)
        if not is_stamp(stamp):
            raise _manifest_error(f"after_keys.{label}.timestamp", "a non-negative 64-bit integer", stamp)
        cursors[label] = {"key": key, "timestamp": stamp}
    return cursors


def _parse_errors(raw: object) -> list[RecordError]:
    if not isinstance(raw, list):
        raise _manifest_error("errors", "a list", raw)
    errors: list[RecordError] = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise _manifest_error(f"errors[{index}]", "an object with a string key", entry)
        error: RecordError = {"key": entry["key"], "message": str(entry.get("message", ""))}
        if "model_label" in entry:
            error["model_label"] = str(entry["model_label"])
        errors.append(error)
    return errors

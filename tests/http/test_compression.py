"""Bounded gzip inflate, shared by the client transport and server_stub."""

from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client_sdk import DecompressionLimitError, InvalidParameterError
from client_sdk.transport.compression import BoundedInflater, gzip_bytes, inflate


@given(data=st.binary(max_size=5000), cut=st.integers(1, 64))
def test_round_trip_in_any_chunking(data: bytes, cut: int) -> None:
    packed = gzip_bytes(data)
    assert gzip.decompress(packed) == data
    inflater = BoundedInflater(len(data))
    for start in range(0, len(packed), cut):
        inflater.feed(packed[start:start + cut])
    assert inflater.finish() == data


@pytest.mark.parametrize("size", [0, 1, 255, 256, 257, 511, 512, 513, 32767, 32768, 32769, 200_000])
def test_bodies_of_every_window_size_round_trip_and_compress(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    packed = gzip_bytes(data)
    assert gzip.decompress(packed) == data and inflate(packed, size) == data
    if size > 1000:
        assert len(packed) < size / 10


def test_the_limit_is_inclusive_and_one_byte_more_is_refused() -> None:
    packed = gzip_bytes(b"a" * 1000)
    assert inflate(packed, 1000) == b"a" * 1000
    with pytest.raises(DecompressionLimitError):
        inflate(packed, 999)


def test_concatenated_members_are_one_body() -> None:
    assert inflate(gzip_bytes(b"ab") + gzip_bytes(b"cd"), 4) == b"abcd"
    with pytest.raises(DecompressionLimitError):
        inflate(gzip_bytes(b"ab") + gzip_bytes(b"cd"), 3)


@pytest.mark.parametrize("packed", [b"", b"not gzip", gzip_bytes(b"x" * 100)[:-5], gzip_bytes(b"x") + b"junk"])
def test_broken_streams_raise_zlib_errors(packed: bytes) -> None:
    with pytest.raises(zlib.error):
        inflate(packed, 1000)


def test_the_limit_is_validated() -> None:
    with pytest.raises(InvalidParameterError):
        BoundedInflater(-1)

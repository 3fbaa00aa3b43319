"""Sizes the protocol's limits are given in (PROTOCOL.md 12)."""

MiB = 1024 * 1024

BODY_BYTES_MAX = 50 * MiB
"""Request and response bodies, compressed or not, by default."""

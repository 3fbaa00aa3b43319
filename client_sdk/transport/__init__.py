"""Transports: how a client's manifest reaches a server and the answer comes back."""

from .http import HttpTransport
from .inprocess import InProcessTransport

__all__ = ["HttpTransport", "InProcessTransport"]

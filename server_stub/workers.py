"""What each process of ``python -m server_stub --workers N`` serves.

uvicorn starts its worker processes as fresh interpreters (multiprocessing's spawn) and hands them its
settings pickled: the app must be named by import string, and so must the HTTP protocol, since the
deadline protocol (``guards.deadline_protocol``) is a class made at run time for the config's timeouts,
which pickle cannot name. The command line therefore leaves the config's path in the environment
(``CONFIG_PATH_VARIABLE``), and in each worker uvicorn imports ``DeadlineProtocol`` from here and calls
:func:`app`: both read that config, and each worker opens its own connection to the database.
"""

from __future__ import annotations

import functools
import os

from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from .app import create_app
from .config import ServerConfig, load_config
from .guards import deadline_protocol

CONFIG_PATH_VARIABLE = "SERVER_STUB_CONFIG"
APP = f"{__name__}:app"
PROTOCOL = f"{__name__}:DeadlineProtocol"


@functools.cache
def _config() -> ServerConfig:
    return load_config(os.environ[CONFIG_PATH_VARIABLE])


def app() -> Starlette:
    """The app factory uvicorn calls in each worker (``factory=True``)."""
    return create_app(_config())


def __getattr__(name: str) -> type[H11Protocol]:
    """``DeadlineProtocol``, made on first use from the worker's config: uvicorn looks it up by name
    (``PROTOCOL``) in each worker, before it calls :func:`app` and before it accepts a connection."""
    if name != "DeadlineProtocol":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    config = _config()
    return deadline_protocol(config.header_timeout, config.body_timeout)

"""The ``python -m server_stub`` command line.

``--workers N`` (N > 1) runs N uvicorn worker processes on one port, each with its own connection to the
config's database (``workers.py``). This process opens the database once first: a bad database is
reported here, once, and the schema is created before the workers start, so they do not race to create it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import uvicorn

from client_sdk.errors import InvalidParameterError, StorageError

from . import workers
from .app import create_app
from .config import load_config
from .guards import deadline_protocol
from .service import SyncService


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server_stub", description="Serve the sync protocol over HTTP.")
    parser.add_argument("--config", required=True, help="TOML file: database, schema, models, auth, limits")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--workers", type=_positive, default=1,
                        help="server processes on this port, all serving the config's database (default: 1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        if args.workers == 1:
            app = create_app(config)
        else:
            SyncService(config).close()  # the database opened once, here (see the module's doc)
    except (InvalidParameterError, StorageError) as exc:  # a bad config, or a database that cannot be opened
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.workers == 1:
        protocol = deadline_protocol(config.header_timeout, config.body_timeout)  # deadlines no ASGI app can keep
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, http=protocol)
    else:
        os.environ[workers.CONFIG_PATH_VARIABLE] = os.path.abspath(args.config)  # the spawned workers inherit it
        uvicorn.run(workers.APP, factory=True, workers=args.workers, host=args.host, port=args.port,
                    log_level=args.log_level, http=workers.PROTOCOL)
    return 0

"""The ``python -m server_stub`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import uvicorn

from client_sdk.errors import InvalidParameterError

from .app import create_app
from .config import load_config
from .guards import deadline_protocol


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server_stub", description="Serve the sync protocol over HTTP.")
    parser.add_argument("--config", required=True, help="TOML file: database, schema, models, auth, limits")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        app = create_app(config)
    except InvalidParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    protocol = deadline_protocol(config.header_timeout, config.body_timeout)  # deadlines no ASGI app can keep
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, http=protocol)
    return 0

"""``python -m server_stub --config server.toml [--host 127.0.0.1] [--port 8000] [--workers 1]``."""

import sys

from .cli import main

sys.exit(main())

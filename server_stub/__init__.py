"""A compatible sync server: the manifest protocol over HTTP (Starlette + uvicorn) on SQLite."""

from .app import create_app
from .config import ServerConfig, load_config

__all__ = ["ServerConfig", "create_app", "load_config"]

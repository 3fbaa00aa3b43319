"""A compatible sync server: the manifest protocol over HTTP (Starlette + uvicorn) on SQLite."""

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ModuleNotFoundError as exc:  # the library installs without them: say how to get them
    raise ModuleNotFoundError(
        f"server_stub needs {exc.name!r}, which comes with the 'server' extra: "
        "pip install 'offline-sync-sdk[server]' (from a clone: pip install -e '.[server]')",
        name=exc.name,
    ) from exc

from .app import create_app  # noqa: E402
from .config import ServerConfig, load_config  # noqa: E402

__all__ = ["ServerConfig", "create_app", "load_config"]

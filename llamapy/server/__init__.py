"""An OpenAI-compatible HTTP server on the batching engine, and a launcher for llama.cpp's llama-server.

The server needs the ``server`` extra (FastAPI, uvicorn); ServerLauncher needs nothing more.
"""
from __future__ import annotations

from typing import Any

from .launcher import ServerLaunchError, ServerLauncher, find_server_binary

INSTALL_HINT = "the llamapy server needs its extra: pip install 'llamapy[server]'"
_NEEDS_EXTRA = {"start_server": "embedded", "EmbeddedServer": "embedded", "BackgroundServer": "embedded",
                "MongooseServer": "embedded", "create_app": "app",
                "ServerSettings": "settings", "Engine": "engine"}


def require_server_extra() -> None:
    """Raise ImportError with the install line when FastAPI or uvicorn is missing."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from None


def __getattr__(name: str) -> Any:
    if name not in _NEEDS_EXTRA:
        raise AttributeError(f"module 'llamapy.server' has no attribute {name!r}")
    require_server_extra()
    import importlib

    return getattr(importlib.import_module(f".{_NEEDS_EXTRA[name]}", __name__), name)


__all__ = ["start_server", "EmbeddedServer", "BackgroundServer", "MongooseServer", "create_app", "ServerSettings",
           "Engine", "ServerLauncher", "ServerLaunchError", "find_server_binary", "require_server_extra"]

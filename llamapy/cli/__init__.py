"""The ``llamapy`` command line: one module per command group, each registering on ``main``."""
from . import convert, embed, estimate, generate, gguf, models, rpc, serve, transcribe  # noqa: F401  (importing registers the commands)
from .app import main

__all__ = ["main"]

"""Clients people already use, on a local model: OpenAI's client API in-process, and LangChain.

Names load on first use, so ``llamapy.integrations`` imports without the optional packages;
the LangChain classes need the ``langchain`` extra.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"OpenAICompatibleClient": "openai_compat", "LlamapyLLM": "langchain", "LlamapyChatModel": "langchain",
         "LlamapyEmbeddings": "langchain", "CyllamaLLM": "langchain", "CyllamaChatModel": "langchain",
         "CyllamaEmbeddings": "langchain"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'llamapy.integrations' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)


__all__ = list(_LAZY)

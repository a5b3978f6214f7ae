"""Granite 3.x: ``<|tool_call|>[{"name": ..., "arguments": {...}}]`` (Granite 4 writes Hermes tags);
reasoning in ``<think>``, the answer sometimes framed by ``<response>...</response>``."""
from __future__ import annotations

from .base import JsonArrayCallFormat


class GraniteFormat(JsonArrayCallFormat):
    name = "granite"
    openers = ("<|tool_call|>",)

    @classmethod
    def detect(cls, source: str) -> bool:
        return "<|tool_call|>" in source


__all__ = ["GraniteFormat"]

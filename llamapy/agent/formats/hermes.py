"""Hermes 2 Pro / Hermes 3 / Qwen 2.5 / Granite 4: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.

Small models of this family often answer with the bare JSON object (sometimes in a
```json fence) instead of the tags: that counts as a call when it names a known tool.
"""
from __future__ import annotations

from .base import JsonCallFormat


class HermesFormat(JsonCallFormat):
    name = "hermes"
    openers = ("<tool_call>",)
    closer = "</tool_call>"
    bare_json = True

    @classmethod
    def detect(cls, source: str) -> bool:
        return "<tool_call>" in source and ("</tool_call>" in source or "tool_call" in source)

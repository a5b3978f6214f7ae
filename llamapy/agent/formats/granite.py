"""Granite 3.x: ``<|tool_call|>[{"name": ..., "arguments": {...}}]`` (Granite 4 writes Hermes tags);
reasoning in ``<think>``, the answer sometimes framed by ``<response>...</response>``."""
from __future__ import annotations

from typing import Collection

from ..messages import ToolCall
from .base import INVALID, ToolFormat, call_from_object, json_call_rule, json_end, load_json


class GraniteFormat(ToolFormat):
    name = "granite"
    openers = ("<|tool_call|>",)

    @classmethod
    def detect(cls, source: str) -> bool:
        return "<|tool_call|>" in source

    def parse_call(self, text: str, start: int, pos: int, final: bool,
                   tool_names: Collection[str] | None) -> tuple[list[ToolCall], int] | str:
        end = json_end(text, pos, "[")
        if not isinstance(end, int):
            return end
        items = load_json(text[pos:end])
        calls = [call_from_object(i, tool_names) for i in items] if isinstance(items, list) and items else [None]
        return (calls, end) if all(calls) else INVALID  # type: ignore[return-value]

    def call_rule(self, name: str, args_rule: str) -> str:
        return json_call_rule(name, args_rule)

    def calls_rule(self, parallel: bool) -> str:
        more = ' ( "," ws call )*' if parallel else ""
        return f'"<|tool_call|>" nl "[" ws call{more} ws "]"'


__all__ = ["GraniteFormat"]

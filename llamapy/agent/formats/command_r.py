"""Command R7B: ``<|START_THINKING|>plan<|END_THINKING|><|START_ACTION|>[{"tool_call_id": "0",
"tool_name": ..., "parameters": {...}}]<|END_ACTION|>``; answers in ``<|START_RESPONSE|>...<|END_RESPONSE|>``."""
from __future__ import annotations

from typing import Collection

from ..messages import ParsedMessage, ToolCall
from .base import INVALID, ToolFormat, call_from_object, held_prefix, json_call_rule, json_end, load_json

RESPONSE_BEGIN, RESPONSE_END = "<|START_RESPONSE|>", "<|END_RESPONSE|>"


class CommandR7BFormat(ToolFormat):
    name = "command-r7b"
    think = ("<|START_THINKING|>", "<|END_THINKING|>")
    openers = ("<|START_ACTION|>",)
    trailer = "<|END_ACTION|>"

    @classmethod
    def detect(cls, source: str) -> bool:
        return "<|START_ACTION|>" in source and "<|START_THINKING|>" in source

    def parse_body(self, text: str, final: bool, tool_names: Collection[str] | None, msg: ParsedMessage) -> None:
        # The response markers only frame the text for the user: drop them (holding half-written ones).
        stripped = text.lstrip()
        if stripped.startswith(RESPONSE_BEGIN):
            text = stripped[len(RESPONSE_BEGIN):]
            end = text.find(RESPONSE_END)
            if end >= 0:
                text = text[:end]
        elif not final and stripped and RESPONSE_BEGIN.startswith(stripped):
            return
        super().parse_body(text, final, tool_names, msg)
        if not final and msg.content:
            cut = held_prefix(msg.content, [RESPONSE_END])
            msg.content = msg.content[:len(msg.content) - cut].rstrip()

    def parse_call(self, text: str, start: int, pos: int, final: bool,
                   tool_names: Collection[str] | None) -> tuple[list[ToolCall], int] | str:
        end = json_end(text, pos, "[")
        if not isinstance(end, int):
            return end
        items = load_json(text[pos:end])
        calls = [call_from_object(i, tool_names, ("tool_name", "name"), ("parameters", "arguments"))
                 for i in items] if isinstance(items, list) and items else [None]
        if not all(calls):
            return INVALID
        return calls, end  # type: ignore[return-value]

    def call_rule(self, name: str, args_rule: str) -> str:
        return (f'"{{" ws "\\"tool_call_id\\"" ws ":" ws "\\"" [0-9]{{1,3}} "\\"" ws "," ws '
                f'{json_call_rule(name, args_rule, "tool_name", "parameters")[4:]}')

    def calls_rule(self, parallel: bool) -> str:
        more = ' ( nl "," nl call )*' if parallel else ""
        return f'"<|START_ACTION|>" nl "[" nl call{more} nl "]" nl "<|END_ACTION|>"'


__all__ = ["CommandR7BFormat"]

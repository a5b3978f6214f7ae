"""Command R7B: ``<|START_THINKING|>plan<|END_THINKING|><|START_ACTION|>[{"tool_call_id": "0",
"tool_name": ..., "parameters": {...}}]<|END_ACTION|>``; answers in ``<|START_RESPONSE|>...<|END_RESPONSE|>``."""
from __future__ import annotations

from typing import Collection

from ..messages import ParsedMessage
from .base import JsonArrayCallFormat, held_prefix, json_call_rule

RESPONSE_BEGIN, RESPONSE_END = "<|START_RESPONSE|>", "<|END_RESPONSE|>"


class CommandR7BFormat(JsonArrayCallFormat):
    name = "command-r7b"
    name_keys = ("tool_name", "name")
    arg_keys = ("parameters", "arguments")
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

    def call_rule(self, name: str, args_rule: str) -> str:
        return (f'"{{" ws "\\"tool_call_id\\"" ws ":" ws "\\"" [0-9]{{1,3}} "\\"" ws "," ws '
                f'{json_call_rule(name, args_rule, "tool_name", "parameters")[4:]}')

    def calls_rule(self, parallel: bool) -> str:
        more = ' ( nl "," nl call )*' if parallel else ""
        return f'"<|START_ACTION|>" nl "[" nl call{more} nl "]" nl "<|END_ACTION|>"'


__all__ = ["CommandR7BFormat"]

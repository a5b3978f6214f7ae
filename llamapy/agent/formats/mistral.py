"""Mistral: Nemo's ``[TOOL_CALLS][{"name": ..., "arguments": {...}, "id": "..."}]``, and the newer
``[TOOL_CALLS]name[CALL_ID]id[ARGS]{...}`` (Small 3.2, Devstral, Ministral; ``[THINK]`` reasoning)."""
from __future__ import annotations

import secrets
import string
from typing import Collection

from ..messages import ToolCall, dump_arguments
from .base import INCOMPLETE, INVALID, JsonArrayCallFormat, ToolFormat, gbnf_literal, json_end, load_json, \
    skip_ws

_ALNUM = string.ascii_letters + string.digits


def mistral_id() -> str:
    """Mistral templates require 9 alphanumeric characters."""
    return "".join(secrets.choice(_ALNUM) for _ in range(9))


class MistralNemoFormat(JsonArrayCallFormat):
    name = "mistral-nemo"
    think = None
    openers = ("[TOOL_CALLS]",)

    @classmethod
    def detect(cls, source: str) -> bool:
        return "[TOOL_CALLS]" in source

    def new_id(self) -> str:
        return mistral_id()


class MistralFormat(ToolFormat):
    name = "mistral"
    think = ("[THINK]", "[/THINK]")
    openers = ("[TOOL_CALLS]",)

    @classmethod
    def detect(cls, source: str) -> bool:
        return "[TOOL_CALLS]" in source and "[ARGS]" in source

    def new_id(self) -> str:
        return mistral_id()

    def parse_call(self, text: str, start: int, pos: int, final: bool,
                   tool_names: Collection[str] | None) -> tuple[list[ToolCall], int] | str:
        calls: list[ToolCall] = []
        while True:
            a = text.find("[ARGS]", pos)
            if a < 0:
                return INCOMPLETE if not final else INVALID
            head = text[pos:a]
            name, _, call_id = head.partition("[CALL_ID]")
            name = name.strip()
            if not name or (tool_names is not None and name not in tool_names):
                return INVALID
            end = json_end(text, a + len("[ARGS]"), "{")
            if not isinstance(end, int):
                return end
            args = load_json(text[a + len("[ARGS]"):end])
            if not isinstance(args, dict):
                return INVALID
            calls.append(ToolCall(name, dump_arguments(args), call_id.strip() or None))
            j = skip_ws(text, end)
            if text.startswith("[TOOL_CALLS]", j):
                pos = j + len("[TOOL_CALLS]")
                continue
            if not final and "[TOOL_CALLS]".startswith(text[j:]):
                return INCOMPLETE  # maybe another call follows
            return calls, end

    def call_rule(self, name: str, args_rule: str) -> str:
        return f'"[TOOL_CALLS]" nl {gbnf_literal(name)} "[ARGS]" {args_rule}'


__all__ = ["MistralNemoFormat", "MistralFormat", "mistral_id"]

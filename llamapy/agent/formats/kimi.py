"""Kimi K2: ``<|tool_calls_section_begin|><|tool_call_begin|>functions.name:0<|tool_call_argument_begin|>{...}
<|tool_call_end|>...<|tool_calls_section_end|>``; the ``functions.name:index`` text is the call id."""
from __future__ import annotations

import re
from typing import Collection

from ..messages import ToolCall, dump_arguments
from .base import INCOMPLETE, INVALID, ToolFormat, gbnf_literal, json_end, load_json, skip_ws

SECTION_BEGIN, SECTION_END = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"
CALL_BEGIN, ARGS_BEGIN, CALL_END = "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>"
_ID = re.compile(r"\s*(?:functions\.)?([\w.-]+?)(?::\d+)?\s*$")


class KimiK2Format(ToolFormat):
    name = "kimi-k2"
    openers = (SECTION_BEGIN,)
    trailer = SECTION_END

    @classmethod
    def detect(cls, source: str) -> bool:
        return SECTION_BEGIN in source and CALL_BEGIN in source

    def parse_call(self, text: str, start: int, pos: int, final: bool,
                   tool_names: Collection[str] | None) -> tuple[list[ToolCall], int] | str:
        calls: list[ToolCall] = []
        while True:
            j = skip_ws(text, pos)
            if not text.startswith(CALL_BEGIN, j):
                if not final and CALL_BEGIN.startswith(text[j:]):
                    return INCOMPLETE
                return (calls, pos) if calls else INVALID
            a = text.find(ARGS_BEGIN, j)
            if a < 0:
                return INCOMPLETE
            call_id = text[j + len(CALL_BEGIN):a].strip()
            m = _ID.match(call_id)
            if not m or (tool_names is not None and m.group(1) not in tool_names):
                return INVALID
            end = json_end(text, a + len(ARGS_BEGIN), "{")
            if not isinstance(end, int):
                return end
            args = load_json(text[a + len(ARGS_BEGIN):end])
            k = skip_ws(text, end)
            if not isinstance(args, dict):
                return INVALID
            if not text.startswith(CALL_END, k):
                return INCOMPLETE if CALL_END.startswith(text[k:]) else INVALID
            calls.append(ToolCall(m.group(1), dump_arguments(args), call_id))
            pos = k + len(CALL_END)

    def call_rule(self, name: str, args_rule: str) -> str:
        return (f'"{CALL_BEGIN}" {gbnf_literal("functions." + name + ":")} [0-9]{{1,2}} "{ARGS_BEGIN}" {args_rule} '
                f'"{CALL_END}"')

    def calls_rule(self, parallel: bool) -> str:
        return f'"{SECTION_BEGIN}" nl call{" ( nl call )*" if parallel else ""} nl "{SECTION_END}"'


__all__ = ["KimiK2Format"]

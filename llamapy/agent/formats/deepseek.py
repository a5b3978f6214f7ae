"""DeepSeek R1 (``function<｜tool▁sep｜>name`` then a ```json block) and V3.1
(``name<｜tool▁sep｜>{...}``), both inside ``<｜tool▁calls▁begin｜>...<｜tool▁calls▁end｜>``."""
from __future__ import annotations

from typing import Collection, Sequence

from ..messages import ToolCall, dump_arguments
from .base import INCOMPLETE, INVALID, ToolFormat, ends_with_opener, gbnf_literal, json_end, load_json, skip_ws

CALLS_BEGIN, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CALL_BEGIN, CALL_END, SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"


class DeepSeekFormat(ToolFormat):
    name = "deepseek-v3.1"
    openers = (CALLS_BEGIN, CALL_BEGIN)
    trailer = CALLS_END

    @classmethod
    def detect(cls, source: str) -> bool:
        return CALLS_BEGIN in source

    def parse_call(self, text: str, start: int, pos: int, final: bool,
                   tool_names: Collection[str] | None) -> tuple[list[ToolCall], int] | str:
        if text.startswith(CALL_BEGIN, start):
            pos = start  # calls without the section opener
        calls: list[ToolCall] = []
        while True:
            j = skip_ws(text, pos)
            if not text.startswith(CALL_BEGIN, j):
                if not final and CALL_BEGIN.startswith(text[j:]):
                    return INCOMPLETE
                return (calls, pos) if calls else INVALID
            one = self._one(text, j + len(CALL_BEGIN), tool_names)
            if not isinstance(one, tuple):
                return one
            calls.append(one[0])
            pos = one[1]

    def _one(self, text: str, pos: int, tool_names: Collection[str] | None) -> tuple[ToolCall, int] | str:
        sep = text.find(SEP, pos)
        if sep < 0:
            return INCOMPLETE
        name = text[pos:sep].strip()
        pos = sep + len(SEP)
        if name == "function":  # R1: the type, then the name on its own line and a fenced block
            nl = text.find("\n", pos)
            if nl < 0:
                return INCOMPLETE
            name = text[pos:nl].strip()
            pos = skip_ws(text, nl)
            if "```json".startswith(text[pos:pos + 7]) and len(text) - pos < 7:
                return INCOMPLETE
            if text.startswith("```json", pos):
                pos += 7
        if tool_names is not None and name not in tool_names:
            return INVALID
        end = json_end(text, pos, "{")
        if not isinstance(end, int):
            return end
        args = load_json(text[pos:end])
        if not isinstance(args, dict):
            return INVALID
        k = skip_ws(text, end)
        if text.startswith("```", k):
            k = skip_ws(text, k + 3)
        if text.startswith(CALL_END, k):
            return ToolCall(name, dump_arguments(args)), k + len(CALL_END)
        if CALL_END.startswith(text[k:]) or "```".startswith(text[k:]):
            return INCOMPLETE
        return INVALID

    def call_rule(self, name: str, args_rule: str) -> str:
        return f'"{CALL_BEGIN}" {gbnf_literal(name)} "{SEP}" {args_rule} "{CALL_END}"'

    def calls_rule(self, parallel: bool) -> str:
        return f'"{CALLS_BEGIN}" nl call{" ( nl call )*" if parallel else ""} nl "{CALLS_END}"'

    def trigger_patterns(self, names: Sequence[str]) -> list[str]:
        return [ends_with_opener(CALLS_BEGIN)]


class DeepSeekR1Format(DeepSeekFormat):
    name = "deepseek-r1"

    @classmethod
    def detect(cls, source: str) -> bool:
        return CALLS_BEGIN in source and "```json" in source

    def call_rule(self, name: str, args_rule: str) -> str:
        return (f'"{CALL_BEGIN}function{SEP}" {gbnf_literal(name)} "\\n```json\\n" {args_rule} '
                f'"\\n```{CALL_END}"')


__all__ = ["DeepSeekFormat", "DeepSeekR1Format"]

"""Qwen3-Coder (also Qwen3.5, Nemotron Nano 3): ``<tool_call>\\n<function=name>\\n<parameter=key>\\nvalue
\\n</parameter>\\n</function>\\n</tool_call>``."""
from __future__ import annotations

import re
from typing import Collection

from ..messages import ToolCall, dump_arguments
from .base import INCOMPLETE, INVALID, ToolFormat, skip_ws
from .xml_args import xml_value

_PARAM = re.compile(r"<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>", re.S)


class Qwen3CoderFormat(ToolFormat):
    name = "qwen3-coder"
    openers = ("<tool_call>",)
    grammar = False  # arguments are tags, not JSON: parsed, not forced

    @classmethod
    def detect(cls, source: str) -> bool:
        return "<tool_call>" in source and "<function=" in source and "<parameter=" in source

    def parse_call(self, text: str, start: int, pos: int, final: bool,
                   tool_names: Collection[str] | None) -> tuple[list[ToolCall], int] | str:
        j = skip_ws(text, pos)
        if not text.startswith("<function=", j):
            return INCOMPLETE if "<function=".startswith(text[j:]) else INVALID
        end = text.find("</tool_call>", j)
        if end < 0:
            return INCOMPLETE
        m = re.match(r"<function=([^>\n]+)>(.*?)</function>\s*$", text[j:end], re.S)
        if not m or (tool_names is not None and m.group(1).strip() not in tool_names):
            return INVALID
        inner = m.group(2)
        args = {k.strip(): xml_value(v) for k, v in _PARAM.findall(inner)}
        if _PARAM.sub("", inner).strip():
            return INVALID
        return [ToolCall(m.group(1).strip(), dump_arguments(args))], end + len("</tool_call>")


__all__ = ["Qwen3CoderFormat"]

"""GLM 4.5 / 4.6 / 4.7: ``<tool_call>name\\n<arg_key>k</arg_key>\\n<arg_value>v</arg_value>\\n</tool_call>``."""
from __future__ import annotations

import re
from typing import Collection

from ..messages import ToolCall, dump_arguments
from .base import INCOMPLETE, INVALID, ToolFormat
from .xml_args import xml_value

_PAIR = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.S)


class GlmFormat(ToolFormat):
    name = "glm4"
    openers = ("<tool_call>",)
    grammar = False  # arguments are tags, not JSON: parsed, not forced

    @classmethod
    def detect(cls, source: str) -> bool:
        return "<tool_call>" in source and "<arg_key>" in source

    def parse_call(self, text: str, start: int, pos: int, final: bool,
                   tool_names: Collection[str] | None) -> tuple[list[ToolCall], int] | str:
        end = text.find("</tool_call>", pos)
        if end < 0:
            return INCOMPLETE
        inner = text[pos:end]
        name, _, rest = inner.partition("<arg_key>")
        name = name.strip()
        rest = "<arg_key>" + rest if rest else ""
        if not name or "\n" in name or (tool_names is not None and name not in tool_names):
            return INVALID
        if _PAIR.sub("", rest).strip():
            return INVALID
        args = {k.strip(): xml_value(v) for k, v in _PAIR.findall(rest)}
        return [ToolCall(name, dump_arguments(args))], end + len("</tool_call>")


__all__ = ["GlmFormat"]

"""Llama 3.1 / 3.2 / 3.3: a bare ``{"name": ..., "parameters": {...}}`` object, or after
``<|python_tag|>`` either such an object or a built-in tool call ``brave_search.call(query="...")``."""
from __future__ import annotations

import ast
import re
from typing import Collection

from ..messages import ToolCall, dump_arguments
from .base import INCOMPLETE, INVALID, ToolFormat, call_from_object, json_call_rule, json_end, load_json

_BUILTIN = re.compile(r"\s*([A-Za-z_]\w*)\.call\((.*)\)\s*$", re.S)


class Llama3Format(ToolFormat):
    name = "llama3"
    think = None
    openers = ("<|python_tag|>",)
    bare_json = True
    parallel = False

    @classmethod
    def detect(cls, source: str) -> bool:
        return "<|start_header_id|>" in source and ("ipython" in source or "<|python_tag|>" in source)

    def parse_call(self, text: str, start: int, pos: int, final: bool,
                   tool_names: Collection[str] | None) -> tuple[list[ToolCall], int] | str:
        end_marker = text.find("<|eom_id|>", pos)
        stop = end_marker if end_marker >= 0 else len(text)
        if end_marker < 0 and not final:
            return INCOMPLETE  # a python_tag message runs to the end of the turn
        body = text[pos:stop]
        after = stop + len("<|eom_id|>") if end_marker >= 0 else stop
        if body.lstrip().startswith("{"):
            end = json_end(body, 0, "{")
            call = call_from_object(load_json(body[:end]), tool_names) if isinstance(end, int) else None
            return ([call], after) if call and not body[end:].strip() else INVALID  # type: ignore[index]
        m = _BUILTIN.match(body)
        if m and (tool_names is None or m.group(1) in tool_names):
            args = _call_kwargs(m.group(2))
            return ([ToolCall(m.group(1), dump_arguments(args))], after) if args is not None else INVALID
        if tool_names is None or "python" in tool_names:
            return [ToolCall("python", dump_arguments({"code": body.strip()}))], after
        return INVALID

    def call_rule(self, name: str, args_rule: str) -> str:
        return f'( "<|python_tag|>" nl )? {json_call_rule(name, args_rule, "name", "parameters")}'


def _call_kwargs(text: str) -> dict | None:
    """Keyword arguments of a Python call's argument list (literals only)."""
    try:
        call = ast.parse(f"f({text})", mode="eval").body
        assert isinstance(call, ast.Call) and not call.args
        return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except (SyntaxError, ValueError, AssertionError):
        return None


__all__ = ["Llama3Format"]

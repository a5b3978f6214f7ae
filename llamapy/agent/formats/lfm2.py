"""LFM2 / LFM2.5 (Liquid): a Python list of keyword calls between markers,
``<|tool_call_start|>[get_weather(city="Paris"), add(a=1, b=2)]<|tool_call_end|>``.

Values are Python literals, and JSON's ``true``/``false``/``null`` too (LFM2.5's template writes
nested objects with ``tojson``); names may be dotted (``Calendar.create_event``). LFM2 and
LFM2.5-Instruct's templates do not render calls at all: the assistant's content carries this text.
"""
from __future__ import annotations

import ast
import json
import keyword
import math
from typing import Any, Collection

from ..messages import ToolCall, dump_arguments
from .base import INCOMPLETE, INVALID, ToolFormat, gbnf_literal
from .value_grammar import ValueSyntax

CALL_START, CALL_END = "<|tool_call_start|>", "<|tool_call_end|>"
_WORDS = {"true": True, "false": False, "null": None}


class _NotLiteral(Exception):
    """The call is not a list of keyword calls with literal values."""


class _PythonValues(ValueSyntax):
    """Python literals (and JSON's words): arguments are keywords, nested dicts have quoted keys,
    strings take either quote."""

    value, string, integer, number = "p-value", "p-string", "p-integer", "p-number"
    true, false, null = '( "True" | "true" )', '( "False" | "false" )', '( "None" | "null" )'
    any_object, any_list = "p-dict", "p-list"
    any_args = '( p-kwarg ( "," ws p-kwarg )* )?'
    sep = '"," ws'
    list_open, list_close = '"[" ws', 'ws "]"'
    object_open, object_close = '"{" ws', 'ws "}"'
    args_open = args_close = ""

    def text(self, s: str) -> str | None:
        double = json.dumps(s, ensure_ascii=False)  # JSON's escapes are Python's too
        single = "'" + double[1:-1].replace("'", "\\'") + "'"
        return f"( {gbnf_literal(double)} | {gbnf_literal(single)} )"

    def key(self, name: str) -> str | None:
        return f'{self.text(name)} ws ":" ws'

    def arg(self, name: str) -> str | None:
        return gbnf_literal(name + "=") if name.isidentifier() and not keyword.iskeyword(name) else None


class Lfm2Format(ToolFormat):
    name = "lfm2"
    openers = (CALL_START,)
    # Python (or JSON) values, the generic rules of the schema-driven arguments (``value_syntax``).
    # Strings leave out what Python refuses: raw line ends and NULs, unknown or cut escapes.
    grammar_rules = {
        "p-kwarg": '[A-Za-z_] [A-Za-z0-9_]{0,63} "=" p-value',
        "p-value": 'p-string | p-dict | p-list | p-number | "True" | "False" | "None" | "true" | "false" | "null"',
        "p-string": r'''"\"" ( [^"\\\n\r\x00] | p-escape )* "\"" | "'" ( [^'\\\n\r\x00] | p-escape )* "'"''',
        "p-escape": r'''"\\" ( ["'\\abfnrtv0-7] | "x" [0-9a-fA-F]{2} | "u" [0-9a-fA-F]{4} )''',
        "p-dict": '"{" ws ( p-string ws ":" ws p-value ( "," ws p-string ws ":" ws p-value )* ws )? "}"',
        "p-list": '"[" ws ( p-value ( "," ws p-value )* ws )? "]"',
        "p-integer": '"-"? ( "0" | [1-9] [0-9]{0,15} )',
        "p-number": 'p-integer ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,2} )?',  # finite, as JSON needs
    }
    value_syntax = _PythonValues()

    @classmethod
    def detect(cls, source: str) -> bool:
        return "<|tool_list_start|>" in source or CALL_START in source or "List of tools: [" in source

    def parse_call(self, text: str, start: int, pos: int, final: bool,
                   tool_names: Collection[str] | None) -> tuple[list[ToolCall], int] | str:
        end = text.find(CALL_END, pos)
        if end < 0 and not final:
            return INCOMPLETE
        calls = _calls(text[pos:end if end >= 0 else len(text)], tool_names)
        if calls is None:
            return INVALID if end >= 0 else INCOMPLETE  # without its end marker it stays text
        return calls, end + len(CALL_END) if end >= 0 else len(text)

    # -- grammar ---------------------------------------------------------------------
    def call_rule(self, name: str, args_rule: str) -> str:
        return f'{gbnf_literal(name + "(")} {args_rule} ")"'

    def calls_rule(self, parallel: bool) -> str:
        more = ' ( "," ws call )*' if parallel else ""
        return f'"{CALL_START}" nl "[" call{more} "]" nl "{CALL_END}"'


def _calls(text: str, tool_names: Collection[str] | None) -> list[ToolCall] | None:
    """The calls of ``[name(key=value, ...), ...]``, or None when that is not what ``text`` is."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
        items = tree.elts if isinstance(tree, ast.List) else [tree]
        calls = [_call(item) for item in items]
    except (SyntaxError, ValueError, RecursionError, _NotLiteral):
        return None
    if not calls or any(tool_names is not None and c.name not in tool_names for c in calls):
        return None
    return calls


def _call(node: ast.expr) -> ToolCall:
    if not isinstance(node, ast.Call) or node.args or any(kw.arg is None for kw in node.keywords):
        raise _NotLiteral
    args = {kw.arg: _value(kw.value) for kw in node.keywords}
    return ToolCall(_dotted(node.func), dump_arguments(args))


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    raise _NotLiteral


def _value(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool, type(None))):
        if isinstance(node.value, float) and not math.isfinite(node.value):
            raise _NotLiteral  # JSON has no infinity
        return node.value
    if isinstance(node, ast.Name) and node.id in _WORDS:
        return _WORDS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _value(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_value(e) for e in node.elts]
    if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
        keys = [_value(k) for k in node.keys]  # type: ignore[arg-type]
        if all(isinstance(k, str) for k in keys):
            return dict(zip(keys, (_value(v) for v in node.values)))
    raise _NotLiteral


__all__ = ["Lfm2Format"]

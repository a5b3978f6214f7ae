"""Gemma 4: ``<|tool_call>call:name{key:value,...}<tool_call|>``, calls back to back, reasoning in
``<|channel>thought\\n...<channel|>``.

Arguments are not JSON: keys are bare, strings are wrapped in ``<|"|>`` (no escapes inside),
nested objects and lists follow the same rules; numbers and ``true``/``false`` are as in JSON,
and the template writes a missing value as ``None``. The template renders an assistant message's
calls before its text, and a model may emit another (usually empty) thought block or a stray
``<channel|>`` later in the reply: those go to the reasoning or are dropped, never to the content.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Collection

from ..messages import ParsedMessage, ToolCall, dump_arguments
from .base import INCOMPLETE, INVALID, Body, ToolFormat, find_first, gbnf_literal, held_prefix, skip_ws
from .value_grammar import ValueSyntax

CALL_OPEN, CALL_CLOSE, QUOTE = "<|tool_call>", "<tool_call|>", '<|"|>'
THOUGHT_OPEN, THOUGHT_CLOSE = "<|channel>", "<channel|>"
_NAME = re.compile(r"[A-Za-z_][\w.-]*")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_ATOM = re.compile(r"[-+.\w]+")  # a number or a word, whole or still being written
_THOUGHT_HEAD = re.compile(r"^(?:\s*<\|channel>)*\s*(?:thought\b)?")  # the channel name, repeated opens
_WORDS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
_KEY_STOPS = set("{}[],<>\"\n")


class _Incomplete(Exception):
    """The text ended inside a value."""


class _Invalid(Exception):
    """The text cannot be a value."""


class _Reader:
    """Reads one Gemma 4 value from ``text`` at ``pos``."""

    def __init__(self, text: str, pos: int):
        self.text, self.pos = text, pos

    def value(self) -> Any:
        t = self.text
        self.pos = i = skip_ws(t, self.pos)
        if i == len(t) or QUOTE.startswith(t[i:]):
            raise _Incomplete
        if t.startswith(QUOTE, i):
            return self.string()
        if t[i] == "{":
            return self.mapping()
        if t[i] == "[":
            out: list = []
            self.items("]", lambda: out.append(self.value()))
            return out
        m = _ATOM.match(t, i)
        if not m:
            raise _Invalid
        if m.end() == len(t):
            raise _Incomplete  # the number or word may go on
        self.pos, atom = m.end(), m.group()
        if atom in _WORDS:
            return _WORDS[atom]
        if not _NUMBER.fullmatch(atom):
            raise _Invalid
        if not any(c in atom for c in ".eE"):
            return int(atom)
        number = float(atom)
        if not math.isfinite(number):
            raise _Invalid  # JSON has no infinity
        return number

    def string(self) -> str:
        start = self.pos + len(QUOTE)
        end = self.text.find(QUOTE, start)
        if end < 0:
            raise _Incomplete
        self.pos = end + len(QUOTE)
        return self.text[start:end]

    def mapping(self) -> dict:
        out: dict = {}

        def item() -> None:
            key = self.key()
            out[key] = self.value()

        self.items("}", item)
        return out

    def key(self) -> str:
        t = self.text
        self.pos = i = skip_ws(t, self.pos)
        if i == len(t) or QUOTE.startswith(t[i:]):
            raise _Incomplete
        if t.startswith(QUOTE, i):
            key = self.string()
        else:
            colon = t.find(":", i)
            key = t[i:colon if colon >= 0 else len(t)].strip()
            if _KEY_STOPS & set(key):
                raise _Invalid
            if colon < 0:
                raise _Incomplete
            if not key:
                raise _Invalid
            self.pos = colon
        self.pos = skip_ws(t, self.pos)
        if self.pos == len(t):
            raise _Incomplete
        if t[self.pos] != ":":
            raise _Invalid
        self.pos += 1
        return key

    def items(self, close: str, item: Callable[[], None]) -> None:
        """Reads the comma-separated items of the bracket at ``pos`` up to ``close``."""
        t = self.text
        self.pos = skip_ws(t, self.pos + 1)
        if t.startswith(close, self.pos):
            self.pos += 1
            return
        while True:
            item()
            self.pos = skip_ws(t, self.pos)
            if self.pos == len(t):
                raise _Incomplete
            if t[self.pos] == close:
                self.pos += 1
                return
            if t[self.pos] != ",":
                raise _Invalid
            self.pos += 1


class _GemmaValues(ValueSyntax):
    """Gemma 4 values; the template writes keys bare and sorted."""

    value, string, integer, number = "g-value", "g-string", "g-integer", "g-number"
    null = '( "null" | "None" )'
    any_object = any_args = "g-object"
    any_list = "g-list"
    sort_keys = True

    def text(self, s: str) -> str | None:
        return None if QUOTE in s else gbnf_literal(QUOTE + s + QUOTE)

    def key(self, name: str) -> str | None:
        if name and name == name.strip() and not (_KEY_STOPS | {":"}) & set(name):
            return gbnf_literal(name + ":")
        text = self.text(name)
        return None if text is None else f'{text} ":"'


class Gemma4Format(ToolFormat):
    name = "gemma4"
    think = ("<|channel>thought", THOUGHT_CLOSE)
    openers = (CALL_OPEN,)
    # Gemma 4 values, the generic rules of the schema-driven arguments (``value_syntax``).
    grammar_rules = {
        "g-value": 'g-string | g-object | g-list | g-number | "true" | "false" | "null" | "None"',
        "g-string": '"<|\\"|>" ( [^<] | "<"+ [^<|] )* "<|\\"|>"',
        "g-object": '"{" ( g-key ":" g-value ( "," g-key ":" g-value )* )? "}"',
        "g-key": '[A-Za-z_] [A-Za-z0-9_.-]* | g-string',
        "g-list": '"[" ( g-value ( "," g-value )* )? "]"',
        "g-integer": '"-"? ( "0" | [1-9] [0-9]{0,15} )',
        "g-number": 'g-integer ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,2} )?',  # finite, as JSON needs
    }
    value_syntax = _GemmaValues()

    @classmethod
    def detect(cls, source: str) -> bool:
        return CALL_OPEN + "call:" in source

    def parse_body(self, text: str, final: bool, tool_names: Collection[str] | None, msg: ParsedMessage) -> None:
        body = Body(msg)
        thoughts = [msg.reasoning_content] if msg.reasoning_content else []
        pos = 0
        while True:
            i, marker = find_first(text, (THOUGHT_OPEN, THOUGHT_CLOSE), pos)
            if i < 0:
                end = len(text) if final else len(text) - held_prefix(text[pos:], (THOUGHT_OPEN, THOUGHT_CLOSE))
                self.scan(text[:end], pos, final, tool_names, body)
                break
            self.scan(text[:i], pos, True, tool_names, body)  # what comes before the block is whole
            if marker == THOUGHT_CLOSE:  # a stray end of a thought block
                pos = i + len(marker)
                continue
            close = text.find(THOUGHT_CLOSE, i)
            if close < 0 and not final:
                break  # a later thought block is reported once it has ended
            inner = text[i + len(marker):close if close >= 0 else len(text)]
            thought = _THOUGHT_HEAD.sub("", inner, count=1).strip()
            if thought:
                thoughts.append(thought)
            if close < 0:
                break
            pos = close + len(THOUGHT_CLOSE)
        msg.reasoning_content = "\n\n".join(thoughts)
        body.close(final)

    def parse_call(self, text: str, start: int, pos: int, final: bool,
                   tool_names: Collection[str] | None) -> tuple[list[ToolCall], int] | str:
        j = skip_ws(text, pos)
        if not text.startswith("call:", j):
            return INCOMPLETE if "call:".startswith(text[j:]) else INVALID
        j += len("call:")
        brace = text.find("{", j)
        name = text[j:brace if brace >= 0 else len(text)].strip()
        if name and not _NAME.fullmatch(name):
            return INVALID
        if brace < 0:
            return INCOMPLETE
        if not name or (tool_names is not None and name not in tool_names):
            return INVALID
        reader = _Reader(text, brace)
        try:
            args = reader.mapping()
        except _Incomplete:
            return INCOMPLETE
        except (_Invalid, RecursionError):
            return INVALID
        call = ToolCall(name, dump_arguments(args))
        k = skip_ws(text, reader.pos)
        if text.startswith(CALL_CLOSE, k):
            return [call], k + len(CALL_CLOSE)
        if CALL_CLOSE.startswith(text[k:]):
            return ([call], len(text)) if final else INCOMPLETE  # the end marker may be cut off
        return INVALID

    # -- grammar ---------------------------------------------------------------------
    def call_rule(self, name: str, args_rule: str) -> str:
        return f'"{CALL_OPEN}" nl {gbnf_literal("call:" + name)} {args_rule} "{CALL_CLOSE}"'

    def calls_rule(self, parallel: bool) -> str:
        thought = f'( "{self.think[0]}" ( [^<] | "<" [^c] )* "{THOUGHT_CLOSE}" nl )?'
        return f'{thought} {super().calls_rule(parallel)}'


__all__ = ["Gemma4Format"]

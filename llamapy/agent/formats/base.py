"""What every tool-call format shares: reasoning blocks, marker scanning that holds back
half-written markers, JSON scanning, and the grammar pieces of a call.

A format parses a model's raw output in two modes. ``final=False`` is a snapshot while the
output is still growing: it may only report what no later text can change (content before
any possible marker, calls whose end has been seen), so that a stream of snapshots only ever
grows and its last one equals the ``final=True`` parse of the whole text.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Collection, Iterable, Sequence

from ..messages import ParsedMessage, ToolCall, dump_arguments, new_call_id

if TYPE_CHECKING:
    from .value_grammar import ValueSyntax

INCOMPLETE = "incomplete"  # parse_call: the call has not ended yet
INVALID = "invalid"  # parse_call: this is not a call (its text becomes content)


def held_prefix(text: str, markers: Iterable[str]) -> int:
    """Length of the longest tail of ``text`` that is the start of one of ``markers``."""
    best = 0
    for m in markers:
        for k in range(min(len(m) - 1, len(text)), best, -1):
            if text.endswith(m[:k]):
                best = k
                break
    return best


def find_first(text: str, markers: Iterable[str], start: int = 0) -> tuple[int, str]:
    """(position, marker) of the earliest marker at or after ``start``; (-1, "") if none."""
    best, which = -1, ""
    for m in markers:
        i = text.find(m, start)
        if i >= 0 and (best < 0 or i < best or (i == best and len(m) > len(which))):
            best, which = i, m
    return best, which


def skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def json_end(text: str, start: int, opening: str = "{[") -> int | str:
    """End index of the JSON object/array starting at ``start`` (after whitespace);
    INCOMPLETE if the text stops first, INVALID if it cannot be one."""
    i = skip_ws(text, start)
    if i == len(text):
        return INCOMPLETE
    if text[i] not in opening:
        return INVALID
    depth, in_str, esc = 0, False, False
    for j in range(i, len(text)):
        c = text[j]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return j + 1
    return INCOMPLETE


def load_json(text: str) -> Any:
    """Decoded JSON, or INVALID."""
    try:
        return json.loads(text)
    except ValueError:
        return INVALID


def call_from_object(obj: Any, tool_names: Collection[str] | None, name_keys: Sequence[str] = ("name",),
                     arg_keys: Sequence[str] = ("arguments", "parameters")) -> ToolCall | None:
    """A call from a decoded ``{"name": ..., "arguments": {...}}`` object, or None."""
    if not isinstance(obj, dict):
        return None
    name = next((obj[k] for k in name_keys if isinstance(obj.get(k), str)), None)
    if name is None or (tool_names is not None and name not in tool_names):
        return None
    args = next((obj[k] for k in arg_keys if k in obj), {})
    if isinstance(args, str):
        args = load_json(args) if args.strip() else {}
    if not isinstance(args, dict):
        return None
    call_id = obj.get("id") if isinstance(obj.get("id"), str) else None
    return ToolCall(name, dump_arguments(args), call_id)


def gbnf_literal(text: str) -> str:
    """A GBNF string literal for ``text``."""
    out = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{out}"'


_FENCE = "```json"


def _line_starts(text: str) -> Iterable[int]:
    yield 0
    i = text.find("\n")
    while i >= 0:
        yield i + 1
        i = text.find("\n", i + 1)


class Body:
    """Collects content segments and calls while a format walks the output."""

    def __init__(self, msg: ParsedMessage):
        self.msg = msg
        self.parts: list[str] = []

    def text(self, s: str) -> None:
        self.parts.append(s)

    def call(self, c: ToolCall) -> None:
        self.msg.tool_calls.append(c)

    def close(self, final: bool) -> None:
        text = "".join(self.parts)
        self.msg.content = text.strip() if final else text.lstrip().rstrip()


class ToolFormat:
    """Base of the per-family formats. Subclasses set the markers and ``parse_call``."""

    name = "base"
    #: reasoning block markers, or None when the family has none
    think: tuple[str, str] | None = ("<think>", "</think>")
    #: texts that open a call in the output (what ``parse_call`` starts after)
    openers: tuple[str, ...] = ()
    #: whether a reply may hold several calls
    parallel = True
    #: whether a reply that is only JSON call objects (maybe in a ```json fence) counts as calls
    bare_json = False
    #: text the format may put right after the last call (an end marker)
    trailer = ""
    #: whether calls can be forced by a grammar (``call_rule`` and friends)
    grammar = True
    #: GBNF rules (name -> body) the call rule uses besides the shared ones: for families whose
    #: arguments are not JSON (Gemma 4, LFM2)
    grammar_rules: dict[str, str] = {}
    #: how the arguments are written when they are not JSON: the tool grammar then builds them
    #: from the schema in this syntax (see value_grammar)
    value_syntax: ValueSyntax | None = None

    @classmethod
    def detect(cls, source: str) -> bool:
        """Whether a chat template's source uses this format."""
        return False

    def new_id(self) -> str:
        """An id for a call whose format carries none (some templates check their shape)."""
        return new_call_id()

    # -- parsing -----------------------------------------------------------------------
    def parse(self, text: str, final: bool = True, tool_names: Collection[str] | None = None,
              thinking: bool = False) -> ParsedMessage:
        """The message in ``text``. ``thinking``: the prompt already opened a reasoning block."""
        msg = ParsedMessage()
        body = self.split_reasoning(text, final, thinking, msg)
        if body is not None:
            self.parse_body(body, final, tool_names, msg)
        return msg

    def split_reasoning(self, text: str, final: bool, thinking: bool, msg: ParsedMessage) -> str | None:
        """Move the reasoning block into ``msg``; the rest of the text, or None while it is held."""
        if self.think is None:
            return text
        open_, close = self.think
        stripped = text.lstrip()
        if not thinking:
            if stripped.startswith(open_):
                text = stripped[len(open_):]
            elif not final and open_.startswith(stripped):
                return None  # maybe the start of a reasoning block
            else:
                return text
        end = text.find(close)
        if end < 0:
            keep = len(text) if final else len(text) - held_prefix(text, [close])
            msg.reasoning_content = text[:keep].strip() if final else text[:keep].lstrip().rstrip()
            return None if not final else ""
        msg.reasoning_content = text[:end].strip()
        return text[end + len(close):]

    def parse_body(self, text: str, final: bool, tool_names: Collection[str] | None, msg: ParsedMessage) -> None:
        body = Body(msg)
        start = self._bare_start(text, final, tool_names) if self.bare_json else None
        if start is None:
            self.scan(text, 0, final, tool_names, body)
        else:
            self.scan(text[:start], 0, final, tool_names, body)
            if final:
                for c in self._bare_calls(text[start:], tool_names) or []:
                    body.call(c)
        body.close(final)

    def scan(self, text: str, pos: int, final: bool, tool_names: Collection[str] | None, body: Body) -> None:
        """Content and calls from ``pos`` on: the common loop over ``openers``."""
        while True:
            i, opener = find_first(text, self.openers, pos)
            if i < 0:
                end = len(text) if final else len(text) - held_prefix(text[pos:], self.openers)
                body.text(text[pos:end])
                return
            body.text(text[pos:i])
            result = self.parse_call(text, i, i + len(opener), final, tool_names)
            if result == INCOMPLETE:
                if final:
                    body.text(text[i:])  # a truncated call stays visible as text
                return
            if result == INVALID:
                body.text(text[i:])
                return
            calls, pos = result  # type: ignore[misc]
            for c in calls:
                body.call(c)
            if self.trailer:
                pos = self._skip_trailer(text, pos, final)
                if pos < 0:
                    return

    def _skip_trailer(self, text: str, pos: int, final: bool) -> int:
        j = skip_ws(text, pos)
        if text.startswith(self.trailer, j):
            return j + len(self.trailer)
        if not final and self.trailer.startswith(text[j:]):
            return -1  # maybe the end marker: wait
        return pos

    def parse_call(self, text: str, start: int, pos: int, final: bool,
                   tool_names: Collection[str] | None) -> tuple[list[ToolCall], int] | str:
        """Parse the call(s) whose opener spans ``text[start:pos]``: (calls, end) or INCOMPLETE/INVALID."""
        raise NotImplementedError

    def _bare_start(self, text: str, final: bool, tool_names: Collection[str] | None) -> int | None:
        """Where the reply's trailing bare JSON calls start (what small models write instead of
        the tags: the objects alone, maybe in a ```json fence, maybe after a line of text).
        While streaming: the first line that could start them (the rest is held back)."""
        for start in _line_starts(text):
            rest = text[start:].lstrip(" \t")
            if final:
                if self._bare_calls(rest, tool_names):
                    return start
            elif rest.startswith(("{", _FENCE)) or (rest and _FENCE.startswith(rest)):
                return start
        return None

    def _bare_calls(self, text: str, tool_names: Collection[str] | None) -> list[ToolCall] | None:
        s = text.strip()
        if s.startswith(_FENCE) and s.endswith("```") and len(s) > len(_FENCE) + 3:
            s = s[len(_FENCE):-3].strip()
        if not s.startswith(("{", "[")):
            return None
        calls: list[ToolCall] = []
        pos = 0
        while pos < len(s):
            end = json_end(s, pos)
            if not isinstance(end, int):
                return None
            obj = load_json(s[pos:end])
            for item in obj if isinstance(obj, list) else [obj]:
                c = call_from_object(item, tool_names)
                if c is None:
                    return None
                calls.append(c)
            pos = skip_ws(s, end)
        if not calls or (len(calls) > 1 and not self.parallel):
            return None
        return calls

    # -- grammar ---------------------------------------------------------------------
    # Rules the grammar builder defines for every format: ``ws`` (a little whitespace),
    # ``nl`` (optional whitespace), ``call`` (one call of any allowed tool).
    def call_rule(self, name: str, args_rule: str) -> str:
        """GBNF for one call of ``name`` whose arguments match rule ``args_rule``."""
        raise NotImplementedError

    def calls_rule(self, parallel: bool) -> str:
        """GBNF for the whole call section, from rule ``call``."""
        return "call ( nl call )*" if parallel and self.parallel else "call"

    def trigger_patterns(self, names: Sequence[str]) -> list[str]:
        """Regexes (llama.cpp's lazy grammar, matched against the whole output so far) whose
        first group starts the constrained part. See :func:`ends_with_opener`."""
        return [ends_with_opener(o) for o in self.openers]

    def answer_rules(self) -> list[str]:
        """GBNF alternatives, besides calls, that a triggered grammar accepts under "auto"."""
        return []


# llama.cpp replays the text from the trigger's first group to the end of the output into the
# grammar, and a replayed piece the grammar rejects aborts the process. So every pattern is
# anchored at the end ("^...$": matched against the whole output) and lets the output end only
# where the grammar surely accepts what was written: right after the opener plus a little
# whitespace (what the grammar's ``nl`` takes). A token that runs past that leaves the grammar
# off; the parser still reads the call.
def ends_with_opener(opener: str) -> str:
    return r"^[\s\S]*?(" + escape_regex(opener) + r"[ \t\n]{0,3})$"


def prefix_pattern(atoms: Sequence[str]) -> str:
    """A regex for every non-empty prefix of the sequence of regex ``atoms``."""
    out = ""
    for atom in reversed(atoms[1:]):
        out = f"(?:{atom}{out})?"
    return atoms[0] + out


def bare_json_triggers() -> list[str]:
    """Patterns for a bare ``{"name": "`` object at the start of a line, maybe in a ```json fence."""
    ws = "[ \\t\\n]{0,8}"
    head = prefix_pattern([r"\{" + ws + '"name"', ws + ":", ws + '"'])
    line = r"^(?:[\s\S]*\n)?[ \t]*"
    return [line + "(" + head + ")$", line + r"(```json[ \t\n]{0,3}" + head + ")$"]


def escape_regex(text: str) -> str:
    """``text`` as a literal in llama.cpp's (ECMAScript) regexes."""
    return "".join("\\" + c if c in r"\^$.|?*+()[]{}" else c for c in text)


def json_call_rule(name: str, args_rule: str, name_key: str = "name", args_key: str = "arguments") -> str:
    """GBNF for ``{"name": "<name>", "arguments": <args>}``."""
    return (f'"{{" ws {gbnf_literal(json.dumps(name_key))} ws ":" ws {gbnf_literal(json.dumps(name))} ws "," ws '
            f'{gbnf_literal(json.dumps(args_key))} ws ":" ws {args_rule} ws "}}"')


class JsonCallFormat(ToolFormat):
    """Calls written as JSON objects between an opener and a closer (Hermes-style)."""

    closer = ""
    name_key = "name"
    args_key = "arguments"

    def parse_call(self, text: str, start: int, pos: int, final: bool,
                   tool_names: Collection[str] | None) -> tuple[list[ToolCall], int] | str:
        end = json_end(text, pos, "{")
        if not isinstance(end, int):
            return end
        call = call_from_object(load_json(text[pos:end]), tool_names, (self.name_key, "name"),
                                (self.args_key, "arguments", "parameters"))
        if call is None:
            return INVALID
        if not self.closer:
            return [call], end
        j = skip_ws(text, end)
        if text.startswith(self.closer, j):
            return [call], j + len(self.closer)
        if j == len(text) or self.closer.startswith(text[j:]):
            return ([call], len(text)) if final else INCOMPLETE  # the end marker may be cut off
        return INVALID

    def call_rule(self, name: str, args_rule: str) -> str:
        tail = f" nl {gbnf_literal(self.closer)}" if self.closer else ""
        body = json_call_rule(name, args_rule, self.name_key, self.args_key)
        return f"{gbnf_literal(self.openers[0])} nl {body}{tail}"


class JsonArrayCallFormat(ToolFormat):
    """Calls written as one JSON array of ``{"name": ..., "arguments": ...}`` objects after the opener."""

    name_keys: tuple[str, ...] = ("name",)
    arg_keys: tuple[str, ...] = ("arguments", "parameters")

    def parse_call(self, text: str, start: int, pos: int, final: bool,
                   tool_names: Collection[str] | None) -> tuple[list[ToolCall], int] | str:
        end = json_end(text, pos, "[")
        if not isinstance(end, int):
            return end
        items = load_json(text[pos:end])
        calls = [call_from_object(i, tool_names, self.name_keys, self.arg_keys)
                 for i in items] if isinstance(items, list) and items else [None]
        return (calls, end) if all(calls) else INVALID  # type: ignore[return-value]

    def call_rule(self, name: str, args_rule: str) -> str:
        return json_call_rule(name, args_rule)

    def calls_rule(self, parallel: bool) -> str:
        more = ' ( "," ws call )*' if parallel else ""
        return f'{gbnf_literal(self.openers[0])} nl "[" ws call{more} ws "]"'

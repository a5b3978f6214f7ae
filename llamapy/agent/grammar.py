"""Grammars that force tool calls: the family's call syntax around each tool's argument schema.

``tool_choice`` "auto" gives a lazy grammar: free text is unconstrained until the model writes
the family's call opener (a trigger pattern), from where the call must be complete and its
arguments must match the tool's schema. "required" and a named function constrain from the
first token. This is the one place tool grammars are built, so the grammar engine behind
them can change without touching the formats.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import SchemaError
from ..generation.json_schema import schema_to_gbnf
from .formats.base import ToolFormat, bare_json_triggers, gbnf_literal, json_call_rule
from .formats.value_grammar import ValueSyntax, value_rules
from .tools import FINAL_ANSWER

_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|\{[0-9, ]*\}|[a-zA-Z0-9-]+|\s+|.')

# Rules every tool grammar can use: ``ws`` a little JSON whitespace, ``nl`` optional whitespace
# between markers, ``str`` a JSON string. A format adds its own as ``grammar_rules``.
_SHARED = {
    "ws": "[ \\t\\n]{0,8}",
    "nl": '[ \\t\\n]{0,3}',
    "str": r'"\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) ){0,512} "\""',
}


@dataclass(frozen=True)
class ToolGrammar:
    """A GBNF grammar and, when lazy, the patterns that switch it on."""

    gbnf: str
    trigger_patterns: tuple[str, ...] = ()

    @property
    def lazy(self) -> bool:
        return bool(self.trigger_patterns)


def _renamed(gbnf: str, prefix: str) -> list[str]:
    """The rules of ``gbnf`` with every rule name prefixed (so several grammars can share one file)."""
    rules: list[tuple[str, str]] = []
    for line in gbnf.strip().splitlines():
        name, _, body = line.partition("::=")
        rules.append((name.strip(), body.strip()))
    names = {n for n, _ in rules}

    def rename(body: str) -> str:
        return "".join(prefix + t if t in names else t for t in _TOKEN.findall(body))

    return [f"{prefix}{n} ::= {rename(b)}" for n, b in rules]


def tool_name(tool: Mapping[str, Any]) -> str:
    return tool["function"]["name"]


def arguments_grammar(tool: Mapping[str, Any], prefix: str, syntax: ValueSyntax | None = None) -> list[str]:
    """Rules for one tool's arguments (root rule ``<prefix>root``): JSON, or the family's
    ``syntax`` when its arguments are not JSON."""
    params = tool["function"].get("parameters") or {"type": "object", "properties": {}}
    if syntax is not None:
        return value_rules(params, syntax, prefix)
    try:
        return _renamed(schema_to_gbnf(params), prefix)
    except SchemaError as e:
        raise SchemaError(f"tool {tool_name(tool)!r}: {e}") from None


def build_tool_grammar(fmt: ToolFormat, tools: Sequence[Mapping[str, Any]], tool_choice: Any = "auto",
                       parallel: bool = True) -> ToolGrammar | None:
    """The grammar for ``tool_choice`` ("auto", "required", "none", a tool name or
    ``{"type": "function", "function": {"name": ...}}``); None when nothing is constrained."""
    mode, chosen = parse_tool_choice(tool_choice, tools)
    if mode == "none" or not tools:
        return None
    if not fmt.grammar:
        if mode == "auto":
            return None  # calls are parsed, not forced
        raise ValueError(f"tool_choice {tool_choice!r} needs a call grammar, which the {fmt.name!r} format "
                         f"does not have yet: use tool_choice='auto'")
    lines: list[str] = []
    calls: list[str] = []
    bare: list[str] = []
    for i, tool in enumerate(tools):
        if chosen is not None and tool_name(tool) != chosen:
            continue
        prefix = f"t{i}-"
        lines += arguments_grammar(tool, prefix, fmt.value_syntax)
        lines.append(f"call{i} ::= {fmt.call_rule(tool_name(tool), prefix + 'root')}")
        calls.append(f"call{i}")
        if fmt.bare_json and mode == "auto":
            lines.append(f"bare{i} ::= {json_call_rule(tool_name(tool), prefix + 'root')}")
            bare.append(f"bare{i}")
    root = [fmt.calls_rule(parallel)]
    triggers: tuple[str, ...] = ()
    if mode == "auto":
        if bare:
            # One bare object: small models repeat them until max_tokens when allowed more.
            root += ["bare", '"```json" nl bare nl "```"']
            lines.append("bare ::= " + " | ".join(bare))
        root += fmt.answer_rules()
        names = [tool_name(t) for t in tools]
        triggers = tuple(fmt.trigger_patterns(names)) + (tuple(bare_json_triggers()) if bare else ())
    head = [f"root ::= {' | '.join(f'( {r} )' for r in root)}", f"call ::= {' | '.join(calls)}"]
    shared = [f"{n} ::= {b}" for n, b in {**_SHARED, **fmt.grammar_rules}.items()]
    return ToolGrammar("\n".join(head + lines + shared) + "\n", triggers)


def react_grammar(tools: Sequence[Mapping[str, Any]]) -> str:
    """GBNF for one ReAct step: ``Thought: ...``, ``Action: <tool>``, ``Action Input: <arguments>``,
    where the tool may also be ``final_answer`` with ``{"answer": "..."}``."""
    lines: list[str] = []
    actions: list[str] = []
    for i, tool in enumerate([*tools, FINAL_ANSWER.to_dict()]):
        prefix = f"t{i}-"
        lines += arguments_grammar(tool, prefix)
        actions.append(f'{gbnf_literal(tool_name(tool))} "\\nAction Input: " {prefix}root')
    head = ['root ::= "Thought: " thought "\\nAction: " ( ' + " | ".join(actions) + " )",
            "thought ::= [^\\n]{1,600}"]
    return "\n".join(head + lines) + "\n"


def parse_tool_choice(tool_choice: Any, tools: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """("auto" | "required" | "none", the forced tool's name or None)."""
    names = [tool_name(t) for t in tools]
    if tool_choice is None:
        tool_choice = "auto"
    if isinstance(tool_choice, Mapping):
        fn = tool_choice.get("function") or {}
        tool_choice = fn.get("name") if isinstance(fn, Mapping) else None
        if not isinstance(tool_choice, str):
            raise ValueError('tool_choice must be "auto", "required", "none", a tool name or '
                             '{"type": "function", "function": {"name": ...}}')
        if tool_choice not in names:
            raise ValueError(f"tool_choice names {tool_choice!r}, which is not among the tools: {', '.join(names)}")
        return "required", tool_choice
    if tool_choice in ("auto", "required", "none"):
        if tool_choice == "required" and not tools:
            raise ValueError('tool_choice "required" needs at least one tool')
        return tool_choice, None
    if isinstance(tool_choice, str) and tool_choice in names:
        return "required", tool_choice
    raise ValueError(f'tool_choice must be "auto", "required", "none" or one of the tools ({", ".join(names)}), '
                     f"got {tool_choice!r}")


__all__ = ["ToolGrammar", "build_tool_grammar", "parse_tool_choice", "react_grammar"]

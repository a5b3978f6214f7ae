"""The generic JSON envelope for templates with no native call syntax.

The model answers with one JSON object: ``{"tool_calls": [{"name": ..., "arguments": {...}}]}``
to call, or ``{"response": "..."}`` to answer. Without a grammar a model may also answer
in plain text, which is kept as content.
"""
from __future__ import annotations

import json
from typing import Collection, Sequence

from ..messages import ParsedMessage
from .base import Body, ToolFormat, call_from_object, json_call_rule, json_end, load_json, prefix_pattern

INSTRUCTIONS = ("Respond in JSON. To call tools: {\"tool_calls\": [{\"name\": <tool name>, \"arguments\": "
                "<arguments object>}]}. To answer the user: {\"response\": <your answer>}. Tools:\n")


class GenericFormat(ToolFormat):
    name = "generic"
    think = None

    @classmethod
    def detect(cls, source: str) -> bool:
        return True

    def system_prompt(self, tools: list[dict]) -> str:
        """The instructions added to the conversation (the template knows nothing of tools)."""
        return INSTRUCTIONS + "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in tools)

    def parse_body(self, text: str, final: bool, tool_names: Collection[str] | None, msg: ParsedMessage) -> None:
        body = Body(msg)
        s = text.strip()
        if not s.startswith("{"):
            body.text(text)  # plain text: the model ignored the envelope
            body.close(final)
            return
        end = json_end(s, 0, "{")
        if not final:
            return  # an envelope is reported once it is whole
        obj = load_json(s[:end]) if isinstance(end, int) and end == len(s) else None
        calls = [call_from_object(c, tool_names) for c in obj.get("tool_calls", [])] \
            if isinstance(obj, dict) and isinstance(obj.get("tool_calls"), list) else [None]
        if isinstance(obj, dict) and isinstance(obj.get("response"), str) and "tool_calls" not in obj:
            body.text(obj["response"])
        elif calls and all(calls):
            for c in calls:
                body.call(c)  # type: ignore[arg-type]
        else:
            body.text(text)
        body.close(final)

    def call_rule(self, name: str, args_rule: str) -> str:
        return json_call_rule(name, args_rule)

    def calls_rule(self, parallel: bool) -> str:
        more = ' ( "," ws call )*' if parallel else ""
        return f'"{{" ws "\\"tool_calls\\"" ws ":" ws "[" ws call{more} ws "]" ws "}}"'

    def trigger_patterns(self, names: Sequence[str]) -> list[str]:
        return [r"^\s*(" + prefix_pattern([r"\{", ' ?"', "[tr]"]) + ")$"]

    def answer_rules(self) -> list[str]:
        return ['"{" ws "\\"response\\"" ws ":" ws str ws "}"']

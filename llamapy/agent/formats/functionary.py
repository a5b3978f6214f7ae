"""Functionary v3.1 (``<function=name>{...}</function>``, ``<|python_tag|>`` code) and v3.2
(``>>>recipient\\n`` sections: ``all`` is text for the user, any other recipient is a call)."""
from __future__ import annotations

from typing import Collection, Sequence

from ..messages import ParsedMessage, ToolCall, dump_arguments
from .base import INCOMPLETE, INVALID, Body, ToolFormat, escape_regex, call_from_object, ends_with_opener, \
    gbnf_literal, held_prefix, json_end, load_json


class FunctionaryV31Format(ToolFormat):
    name = "functionary-v3.1"
    think = None
    openers = ("<function=", "<|python_tag|>")

    @classmethod
    def detect(cls, source: str) -> bool:
        return "<function=" in source and "<|start_header_id|>" in source

    def parse_call(self, text: str, start: int, pos: int, final: bool,
                   tool_names: Collection[str] | None) -> tuple[list[ToolCall], int] | str:
        if text.startswith("<|python_tag|>", start):
            if not final:
                return INCOMPLETE  # code runs to the end of the turn
            if tool_names is not None and "python" not in tool_names:
                return INVALID
            return [ToolCall("python", dump_arguments({"code": text[pos:].strip()}))], len(text)
        gt = text.find(">", pos)
        if gt < 0:
            return INCOMPLETE
        name = text[pos:gt].strip()
        if tool_names is not None and name not in tool_names:
            return INVALID
        end = json_end(text, gt + 1, "{")
        if not isinstance(end, int):
            return end
        args = load_json(text[gt + 1:end])
        if not isinstance(args, dict):
            return INVALID
        if text.startswith("</function>", end):
            return [ToolCall(name, dump_arguments(args))], end + len("</function>")
        if "</function>".startswith(text[end:]):
            return ([ToolCall(name, dump_arguments(args))], len(text)) if final else INCOMPLETE
        return INVALID

    def call_rule(self, name: str, args_rule: str) -> str:
        return f'"<function=" nl {gbnf_literal(name + ">")} {args_rule} "</function>"'

    def trigger_patterns(self, names: Sequence[str]) -> list[str]:
        return [ends_with_opener("<function=")]


class FunctionaryV32Format(ToolFormat):
    name = "functionary-v3.2"
    think = None
    parallel = True

    @classmethod
    def detect(cls, source: str) -> bool:
        return ">>>all" in source

    def parse_body(self, text: str, final: bool, tool_names: Collection[str] | None, msg: ParsedMessage) -> None:
        # The prompt ends with ">>>": the reply starts with the first recipient.
        body = Body(msg)
        sections = (">>>" + text).split(">>>")[1:]
        for k, section in enumerate(sections):
            last = k == len(sections) - 1
            recipient, nl, rest = section.partition("\n")
            if not nl:
                if final and recipient.strip() and recipient.strip() != "all":
                    body.text(recipient)  # a recipient with nothing after it
                break
            recipient = recipient.strip()
            if last and not final:
                rest = rest[:len(rest) - held_prefix(rest, [">>>"])]
            if recipient == "all":
                body.text(rest)
                continue
            if last and not final:
                break  # a call is reported once the next section or the end shows it is whole
            obj = load_json(rest.strip())
            call = call_from_object({"name": recipient, "arguments": obj}, tool_names) \
                if isinstance(obj, dict) else None
            if call is None and recipient == "python" and (tool_names is None or "python" in tool_names):
                call = ToolCall("python", dump_arguments({"code": rest.strip()}))
            if call is None:
                body.text(f">>>{recipient}\n{rest}" if k else f"{recipient}\n{rest}")
            else:
                body.call(call)
        body.close(final)

    def call_rule(self, name: str, args_rule: str) -> str:
        return f'{gbnf_literal(name + chr(10))} {args_rule}'

    def calls_rule(self, parallel: bool) -> str:
        return '">>>"? call ( ">>>" call )*' if parallel else '">>>"? call'

    def trigger_patterns(self, names: Sequence[str]) -> list[str]:
        recipients = "(?:" + "|".join(escape_regex(n) for n in names) + ")\\n"
        return [f"^({recipients})$", f"^[\\s\\S]*?(>>>{recipients})$"]


__all__ = ["FunctionaryV31Format", "FunctionaryV32Format"]

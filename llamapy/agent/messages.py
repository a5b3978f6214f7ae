"""The OpenAI-shaped pieces of a tool-using reply: calls, the parsed assistant message, stream deltas."""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

IdFactory = Callable[[], str]


def new_call_id() -> str:
    """A fresh OpenAI-style tool call id."""
    return "call_" + secrets.token_hex(12)


@dataclass
class ToolCall:
    """One function call: its name and its arguments as JSON text (as OpenAI sends them)."""

    name: str
    arguments: str
    id: str | None = None  # native id when the format carries one, else assigned on output

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    @property
    def args(self) -> Any:
        """The arguments, decoded."""
        return json.loads(self.arguments)


@dataclass
class ParsedMessage:
    """What a model's raw output says: visible text, reasoning and calls."""

    content: str = ""
    reasoning_content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI assistant message (``content`` None when there is only a call)."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.content or (None if self.tool_calls else "")}
        if self.reasoning_content:
            msg["reasoning_content"] = self.reasoning_content
        if self.tool_calls:
            msg["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        return msg

    def assign_ids(self, make_id: IdFactory = new_call_id) -> ParsedMessage:
        for c in self.tool_calls:
            if c.id is None:
                c.id = make_id()
        return self


def dump_arguments(value: Any) -> str:
    """Arguments as JSON text, unicode kept (a string that already is JSON text stays as it is)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def merge_deltas(deltas: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Fold a stream of OpenAI deltas back into one assistant message."""
    content, reasoning, calls = [], [], {}  # type: ignore[var-annotated]
    for d in deltas:
        content.append(d.get("content") or "")
        reasoning.append(d.get("reasoning_content") or "")
        for tc in d.get("tool_calls") or ():
            slot = calls.setdefault(tc["index"], {"id": None, "type": "function",
                                                  "function": {"name": "", "arguments": ""}})
            if tc.get("id"):
                slot["id"] = tc["id"]
            fn = tc.get("function") or {}
            slot["function"]["name"] += fn.get("name") or ""
            slot["function"]["arguments"] += fn.get("arguments") or ""
    msg = ParsedMessage("".join(content), "".join(reasoning)).to_dict()
    if calls:
        msg["content"] = msg["content"] or None
        msg["tool_calls"] = [calls[i] for i in sorted(calls)]
    return msg

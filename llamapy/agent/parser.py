"""Incremental parsing of a growing reply into OpenAI deltas.

Each push re-reads the whole output in snapshot mode (``final=False``) and emits what grew
since the last snapshot: content and reasoning as text fragments, each call once it is
complete (id, name and arguments in one delta). Formats only report in a snapshot what later
text cannot change, so the deltas of a stream always add up to the parse of the whole text,
however the text was split.
"""
from __future__ import annotations

from typing import Collection

from .formats.base import ToolFormat
from .messages import IdFactory, ParsedMessage

Delta = dict


class StreamParser:
    """Feed text chunks with :meth:`push`; call :meth:`finish` once at the end."""

    def __init__(self, fmt: ToolFormat, tool_names: Collection[str] | None = None, thinking: bool = False,
                 make_id: IdFactory | None = None):
        self.fmt = fmt
        self.tool_names = tool_names
        self.thinking = thinking
        self.make_id = make_id or fmt.new_id
        self.text = ""
        self.message = ParsedMessage()  # what has been emitted so far
        self.finished = False

    def push(self, chunk: str) -> list[Delta]:
        """Deltas made available by ``chunk``."""
        if self.finished:
            raise RuntimeError("the stream already finished")
        self.text += chunk
        return self._advance(final=False)

    def finish(self) -> list[Delta]:
        """The last deltas (held-back text, a call cut off at the end becomes content)."""
        deltas = self._advance(final=True)
        self.finished = True
        return deltas

    def _advance(self, final: bool) -> list[Delta]:
        snap = self.fmt.parse(self.text, final, self.tool_names, self.thinking)
        out: list[Delta] = []
        seen = self.message
        for key in ("reasoning_content", "content"):
            old, new = getattr(seen, key), getattr(snap, key)
            if len(new) > len(old) and new.startswith(old):
                out.append({key: new[len(old):]})
                setattr(seen, key, new)
        for i in range(len(seen.tool_calls), len(snap.tool_calls)):
            call = snap.tool_calls[i]
            if call.id is None:
                call.id = self.make_id()
            seen.tool_calls.append(call)
            out.append({"tool_calls": [{"index": i, "id": call.id, "type": "function",
                                        "function": {"name": call.name, "arguments": call.arguments}}]})
        return out


def parse_reply(fmt: ToolFormat, text: str, tool_names: Collection[str] | None = None, thinking: bool = False,
                make_id: IdFactory | None = None) -> ParsedMessage:
    """The whole reply at once (what a stream of the same text adds up to)."""
    return fmt.parse(text, True, tool_names, thinking).assign_ids(make_id or fmt.new_id)


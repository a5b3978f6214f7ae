"""Checks on the model's own choice under ``tool_choice="auto"``.

Small models get this choice wrong both ways. They answer "hi" with a call whose arguments
come from nowhere (the example city of the tool's description), and they answer a weather
question with a call written in a syntax of their own (``<json>{name: ...}``) or with prose
that names the tool. Two checks catch these, without asking the model anything:

* a call is **grounded** when one of its free-text arguments shares a word with what the
  user or a tool said (arguments that are enum choices, numbers or booleans prove nothing;
  a call without free text is grounded);
* a text reply to the user **means a call** when it names one of the tools (after tool
  results, an answer naming the tool it used is the usual thing).

An ungrounded call is dropped and the reply rewritten without tools; a reply that means a
call gets one, forced by the tool grammar and then checked for grounding like any other.
"""
from __future__ import annotations

import difflib
import re
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .messages import ParsedMessage, ToolCall

_WORD = re.compile(r"\w{3,}")
_SIMILAR = 0.8  # spelling variants count as the same word ("Lisbon" / "Lisboa")


class CallReview:
    """The checks for one reply, given the conversation it answers and the tools it may call."""

    def __init__(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]):
        self.words = conversation_words(messages)
        self.tools = {t["function"]["name"]: t for t in tools}
        # After tool results an answer naming the tool is the usual thing ("get_weather says ..."):
        # only a reply to the user is completed with a call.
        self.to_user = bool(messages) and messages[-1].get("role") == "user"

    def keep(self, calls: Iterable[ToolCall]) -> list[ToolCall]:
        """The grounded ones among ``calls``."""
        return [c for c in calls if grounded(c, self.tools.get(c.name), self.words)]

    def wants_call(self, reply: ParsedMessage) -> bool:
        """Whether a reply to the user, without calls, names a tool (and should get its call)."""
        return self.to_user and not reply.tool_calls and means_call(reply.content, self.tools)


def conversation_words(messages: Sequence[Mapping[str, Any]]) -> set[str]:
    """The words (3+ letters, case-folded) of what the user and the tools said."""
    words: set[str] = set()
    for m in messages:
        if m.get("role") in ("user", "tool"):
            words.update(_words(_text(m.get("content"))))
    return words


def grounded(call: ToolCall, tool: Mapping[str, Any] | None, words: set[str]) -> bool:
    """Whether ``call`` takes a free-text argument from the conversation (or has none)."""
    try:
        args = call.args
    except ValueError:
        return False
    params = (tool or {}).get("function", {}).get("parameters") or {}
    free = [v for v in _free_strings(args, params) if _words(v)]
    if not free:
        return True
    return any(_known(w, words) for v in free for w in _words(v))


def means_call(content: str, tool_names: Iterable[str]) -> bool:
    """Whether a text reply names one of the tools (a call the model did not manage to write)."""
    return any(re.search(rf"(?<!\w){re.escape(name)}(?!\w)", content) for name in tool_names)


def _known(word: str, words: set[str]) -> bool:
    if word in words:
        return True
    return len(word) >= 4 and any(abs(len(w) - len(word)) <= 2 and
                                  difflib.SequenceMatcher(None, word, w).ratio() >= _SIMILAR for w in words)


def _free_strings(value: Any, schema: Mapping[str, Any]) -> Iterator[str]:
    """String values that are not one of the schema's fixed choices."""
    if isinstance(value, str):
        if "enum" not in schema and "const" not in schema:
            yield value
    elif isinstance(value, Mapping):
        props = schema.get("properties") or {}
        for k, v in value.items():
            yield from _free_strings(v, props.get(k) or {})
    elif isinstance(value, list):
        for v in value:
            yield from _free_strings(v, schema.get("items") or {})


def _words(text: str) -> set[str]:
    return {w.casefold() for w in _WORD.findall(text)}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(p.get("text") or "" for p in content if isinstance(p, Mapping))
    return ""


__all__ = ["CallReview", "conversation_words", "grounded", "means_call"]

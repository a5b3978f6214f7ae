"""GPT-OSS (OpenAI harmony): the reply is a run of messages, each a header then a body,
``<|channel|>analysis<|message|>reasoning<|end|><|start|>assistant<|channel|>final<|message|>answer``.
A call is a message to a recipient: ``<|start|>assistant to=functions.name<|channel|>commentary
json<|message|>{...}<|call|>`` (models also put ``to=`` after the channel, and write
``<|constrain|>json``). The generation prompt ends with ``<|start|>assistant``, so the first
message has no ``<|start|>``.

``analysis`` goes to the reasoning, ``final`` and ``commentary`` (a preamble before a call) to the
content. The template renders an assistant message's ``content`` beside its calls into the
analysis channel, so it comes back as reasoning. A message to a recipient that is not an offered
tool (a built-in one such as ``container.exec``) stays visible as text.
"""
from __future__ import annotations

import re
from typing import Collection, Sequence

from ..messages import ParsedMessage, ToolCall, dump_arguments
from .base import ToolFormat, escape_regex, gbnf_literal, held_prefix, json_end, load_json, \
    prefix_pattern, skip_ws

START, CHANNEL, MESSAGE = "<|start|>", "<|channel|>", "<|message|>"
END, CALL, RETURN = "<|end|>", "<|call|>", "<|return|>"
ANALYSIS = CHANNEL + "analysis" + MESSAGE
BODY_ENDS = (END, CALL, RETURN, START)
HEADER_STARTS = (CHANNEL, "to=")
_RECIPIENT = re.compile(r"\bto=([^\s<]+)")
_CHANNEL = re.compile(re.escape(CHANNEL) + r"\s*(\w+)")
# The text of an analysis or commentary message the grammar lets through before a call: no "<|"
# (which only opens harmony's markers).
_TEXT = '( [^<] | "<" [^|] )*'


class GptOssFormat(ToolFormat):
    name = "gpt-oss"
    think = (ANALYSIS, END)  # a prompt ending with this already opened the reasoning
    parallel = False  # the model stops at <|call|>: one call a reply

    @classmethod
    def detect(cls, source: str) -> bool:
        return CHANNEL in source and START in source

    def parse(self, text: str, final: bool = True, tool_names: Collection[str] | None = None,
              thinking: bool = False) -> ParsedMessage:
        msg = ParsedMessage()
        reasoning: list[str] = []
        content: list[str] = []
        pos = 0
        head: tuple[str | None, int] | None = ("<|channel|>analysis", 0) if thinking else None
        while pos < len(text) or head is not None:
            if head is None:
                head = self._header(text, pos, final)
                if head is None:
                    break  # maybe a header still being written
            header, body_at = head
            head = None
            if header is None:  # a header broken off at body_at: visible as text
                content.append(text[pos:body_at])
                pos = body_at
                continue
            end, after = self._body_end(text, body_at, final)
            recipient = next((r for r in _RECIPIENT.findall(header) if r != "assistant"), None)
            channels = _CHANNEL.findall(header)
            if recipient is not None:
                if after < 0:
                    break  # a call is reported once it has ended
                call = self._call(recipient, text[body_at:end], tool_names)
                if call is None:
                    content.append(text[pos:end])
                else:
                    msg.tool_calls.append(call)
            elif channels and channels[-1] == "analysis":
                reasoning.append(text[body_at:end])
            else:
                content.append(text[body_at:end])
            if after < 0:
                break
            pos = after
        msg.reasoning_content = _joined(reasoning)
        msg.content = _joined(content)
        return msg

    @staticmethod
    def _header(text: str, pos: int, final: bool) -> tuple[str | None, int] | None:
        """(header, where its body starts) for the message at ``pos``; ("", pos) for plain text
        without a header; (None, stop) for a header broken off at ``stop``; None to wait."""
        j = skip_ws(text, pos)
        if text.startswith(START, j):
            j += len(START)
        elif not final and (j == len(text) or any(m.startswith(text[j:]) for m in (START, *HEADER_STARTS))):
            return None
        elif not text.startswith(HEADER_STARTS, j):
            return "", pos
        m = text.find(MESSAGE, j)
        stop = _first_end(text, j)
        if m >= 0 and (stop < 0 or m < stop):
            return text[j:m], m + len(MESSAGE)
        if stop < 0 and not final:
            return None
        return None, stop if stop >= 0 else len(text)

    @staticmethod
    def _body_end(text: str, pos: int, final: bool) -> tuple[int, int]:
        """(end of the body at ``pos``, where the next message starts, or -1 when the body has
        not ended): a body runs to an end marker or the next ``<|start|>``."""
        stop = _first_end(text, pos)
        if stop >= 0:
            marker = next(e for e in BODY_ENDS if text.startswith(e, stop))
            return stop, stop if marker == START else stop + len(marker)
        if final:
            return len(text), len(text)
        return len(text) - held_prefix(text[pos:], BODY_ENDS), -1

    @staticmethod
    def _call(recipient: str, body: str, tool_names: Collection[str] | None) -> ToolCall | None:
        name = recipient.removeprefix("functions.")
        if tool_names is not None and name not in tool_names:
            return None
        end = json_end(body, 0, "{")
        if not isinstance(end, int) or body[end:].strip():
            return None
        args = load_json(body[:end])
        return ToolCall(name, dump_arguments(args)) if isinstance(args, dict) else None

    # -- grammar ---------------------------------------------------------------------
    def call_rule(self, name: str, args_rule: str) -> str:
        to = gbnf_literal(" to=functions." + name)
        constrain = '( " " "<|constrain|>"? [a-zA-Z0-9_-]{1,16} )?'
        return (f'( {to} "<|channel|>commentary" {constrain} "<|message|>" {args_rule} ) | '
                f'( "<|channel|>commentary" {to} {constrain} "<|message|>" {args_rule} )')

    def calls_rule(self, parallel: bool) -> str:
        # Reasoning and preambles may come first, each a message of its own.
        message = f'"<|channel|>" ( "analysis" | "commentary" ) "<|message|>" {_TEXT} "<|end|><|start|>assistant"'
        return f"( {message} )* call"

    def trigger_patterns(self, names: Sequence[str]) -> list[str]:
        to = prefix_pattern([" to", "=", "functions", r"\."])
        return [r"^(?:[\s\S]*?" + escape_regex(START) + "assistant)?(" + to + ")$",
                r"^[\s\S]*?(" + escape_regex(CHANNEL) + "(?:commentary|analysis)" + to + ")$"]


def _first_end(text: str, pos: int) -> int:
    """Where the first end marker or ``<|start|>`` at or after ``pos`` is; -1 if none."""
    return min((i for i in (text.find(e, pos) for e in BODY_ENDS) if i >= 0), default=-1)


def _joined(parts: list[str]) -> str:
    """Message bodies as one text, blank-line separated (the empty ones left out)."""
    return "\n\n".join(p for p in (p.strip() for p in parts) if p)


__all__ = ["GptOssFormat"]

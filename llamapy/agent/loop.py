"""Agent: a model that calls Python functions until it can answer.

Each step asks the model for a reply with the tools; calls are run, their results (or the
exception a tool raised, as text) go back as ``tool`` messages, and the loop goes on until
the model answers without a call; the last of ``max_steps`` steps must answer. With ``tool_choice="required"``
every step must call a tool and the agent adds a ``final_answer`` tool that ends the loop.
``react=True`` drives models without native tool calls through a grammar-constrained
Thought / Action / Action Input / Observation exchange.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from .grammar import react_grammar
from .tools import FINAL_ANSWER, as_tools

if TYPE_CHECKING:
    from ..generation.llm import LLM

@dataclass
class AgentEvent:
    """One thing the agent did, for a UI: ``thought``, ``tool_call``, ``tool_result`` or ``answer``."""

    type: str
    content: str = ""
    name: str | None = None
    arguments: dict[str, Any] | None = None
    call_id: str | None = None
    step: int = 0
    error: bool = False  # tool_result: the tool raised


@dataclass
class AgentResult:
    """The answer and how the agent got there."""

    answer: str
    steps: int
    messages: list[dict[str, Any]]
    events: list[AgentEvent] = field(default_factory=list)

    def __str__(self) -> str:
        return self.answer


class Agent:
    """Runs a model with Python tools (functions, :class:`Tool` objects or OpenAI tool dicts
    whose calls are answered by ``on_unknown_tool``) until it answers.

    ``tool_choice``: "auto" (the model decides) or "required" (every step calls a tool; the
    answer comes through ``final_answer``). Generation settings (temperature, seed, ...) go to
    every model call.
    """

    def __init__(self, llm: LLM, tools: Sequence[Any] = (), system: str | None = None, max_steps: int = 8,
                 tool_choice: str = "auto", react: bool = False, **generation: Any):
        if tool_choice not in ("auto", "required"):
            raise ValueError('an Agent\'s tool_choice is "auto" or "required"')
        if max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        self.llm = llm
        self.tools = as_tools(tools)
        self.system = system
        self.max_steps = max_steps
        self.tool_choice = tool_choice
        self.react = react
        self.generation = generation
        self._by_name = {t.name: t for t in self.tools}

    def run(self, task: str, history: Sequence[dict[str, Any]] = ()) -> AgentResult:
        """Work on ``task`` (after the earlier ``history`` messages) until there is an answer."""
        events = []
        result = None
        for event in self._loop(task, history):
            if isinstance(event, AgentResult):
                result = event
            else:
                events.append(event)
        assert result is not None
        result.events = events
        return result

    def stream(self, task: str, history: Sequence[dict[str, Any]] = ()) -> Iterator[AgentEvent]:
        """The events of :meth:`run` as they happen (the last one is the ``answer``)."""
        for event in self._loop(task, history):
            if isinstance(event, AgentEvent):
                yield event

    # -- running tools -----------------------------------------------------------------
    def call_tool(self, name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        """(result text, whether it failed): a tool's exception is reported, not raised."""
        tool = self._by_name.get(name)
        if tool is None:
            return f"error: there is no tool named {name!r}", True
        try:
            value = tool(**arguments)
        except Exception as e:  # the model reads the error and may try again
            return f"error: {type(e).__name__}: {e}", True
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str), False

    # -- the loop ----------------------------------------------------------------------
    def _start(self, task: str, history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        return messages + [dict(m) for m in history] + [{"role": "user", "content": task}]

    def _loop(self, task: str, history: Sequence[dict[str, Any]]) -> Iterator[AgentEvent | AgentResult]:
        if self.react:
            yield from self._react_loop(task, history)
            return
        messages = self._start(task, history)
        forced = self.tool_choice == "required"
        tools = [t.to_dict() for t in self.tools] + ([FINAL_ANSWER.to_dict()] if forced else [])
        for step in range(1, self.max_steps + 1):
            if step < self.max_steps:
                choice: Any = self.tool_choice
            else:  # out of steps: answer now
                choice = FINAL_ANSWER.name if forced else "none"
            msg = self.llm.chat(messages, tools=tools, tool_choice=choice, **self.generation)
            calls = msg.get("tool_calls") or []
            text = msg.get("content") or ""
            if msg.get("reasoning_content"):
                yield AgentEvent("thought", msg["reasoning_content"], step=step)
            if not calls:
                yield AgentEvent("answer", text, step=step)
                yield AgentResult(text, step, messages + [msg])
                return
            if text:
                yield AgentEvent("thought", text, step=step)
            messages.append(msg)
            for call in calls:
                fn = call["function"]
                args = json.loads(fn["arguments"] or "{}")
                yield AgentEvent("tool_call", name=fn["name"], arguments=args, call_id=call["id"], step=step)
                if fn["name"] == FINAL_ANSWER.name and forced:
                    answer = str(args.get("answer", ""))
                    yield AgentEvent("answer", answer, step=step)
                    yield AgentResult(answer, step, messages)
                    return
                result, failed = self.call_tool(fn["name"], args)
                yield AgentEvent("tool_result", result, name=fn["name"], call_id=call["id"], step=step, error=failed)
                messages.append({"role": "tool", "tool_call_id": call["id"], "name": fn["name"], "content": result})

    def _react_loop(self, task: str, history: Sequence[dict[str, Any]]) -> Iterator[AgentEvent | AgentResult]:
        tools = [t.to_dict() for t in self.tools]
        intro = _react_instructions(tools)
        system = f"{self.system}\n\n{intro}" if self.system else intro
        messages = [{"role": "system", "content": system}] + [dict(m) for m in history] + \
            [{"role": "user", "content": task}]
        grammar = react_grammar(tools)
        for step in range(1, self.max_steps + 1):
            reply = self.llm.chat(messages, grammar=grammar, **self.generation)
            thought, name, args = _parse_react(reply)
            messages.append({"role": "assistant", "content": reply})
            if thought:
                yield AgentEvent("thought", thought, step=step)
            if name == FINAL_ANSWER.name:
                answer = str(args.get("answer", ""))
                yield AgentEvent("answer", answer, step=step)
                yield AgentResult(answer, step, messages)
                return
            yield AgentEvent("tool_call", name=name, arguments=args, step=step)
            result, failed = self.call_tool(name, args)
            yield AgentEvent("tool_result", result, name=name, step=step, error=failed)
            messages.append({"role": "user", "content": f"Observation: {result}"})
        answer = "I could not finish within the allowed number of steps."
        yield AgentEvent("answer", answer, step=self.max_steps)
        yield AgentResult(answer, self.max_steps, messages)


def _react_instructions(tools: list[dict[str, Any]]) -> str:
    lines = ["You solve tasks step by step with tools. Tools:"]
    for t in tools + [FINAL_ANSWER.to_dict()]:
        fn = t["function"]
        lines.append(f"- {fn['name']}: {fn.get('description', '')} Arguments: {json.dumps(fn['parameters'])}")
    lines.append("Reply with exactly:\nThought: <your reasoning>\nAction: <tool name>\nAction Input: <JSON "
                 "arguments>\nYou then get an Observation with the result. When you know the answer, use the "
                 "final_answer tool.")
    return "\n".join(lines)


_REACT = re.compile(r"Thought:(.*?)\nAction:\s*(\S+)\s*\nAction Input:\s*(\{.*\})\s*$", re.S)


def _parse_react(reply: str) -> tuple[str, str, dict[str, Any]]:
    m = _REACT.search(reply)
    if not m:  # only reachable when the grammar was cut off by max_tokens
        return reply.strip(), FINAL_ANSWER.name, {"answer": reply.strip()}
    return m.group(1).strip(), m.group(2), json.loads(m.group(3))


__all__ = ["Agent", "AgentEvent", "AgentResult"]

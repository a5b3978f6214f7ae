"""The ``llamapy chat --tool`` REPL: a chat session whose replies come from an Agent."""
from __future__ import annotations

import importlib
import json
from typing import Any, Callable, Iterator, Sequence

import click

from ..generation.chat_session import ChatSession
from ..generation.llm import LLM
from .loop import Agent


def load_function(spec: str) -> Callable[..., Any]:
    """The function named by ``module:function`` (the module is imported)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--tool takes module:function, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"--tool {spec}: cannot import {module_name!r}: {e}") from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ValueError(f"--tool {spec}: {module_name!r} has no {attr!r}")
    if not callable(fn):
        raise ValueError(f"--tool {spec}: {attr!r} is not a function")
    return fn  # type: ignore[return-value]


class AgentSession(ChatSession):
    """Each question runs the agent over the conversation so far; tool calls and their
    results are shown on stderr, the answer is the reply."""

    def __init__(self, llm: LLM, tools: Sequence[Any], system: str | None = None, **agent: Any):
        super().__init__(llm, system)
        self.agent = Agent(llm, tools, **agent)

    def ask(self, text: str) -> Iterator[str]:
        history = list(self.messages)
        answer = ""
        try:
            for event in self.agent.stream(text, history=history):
                if event.type == "tool_call":
                    click.echo(f"[{event.name}({json.dumps(event.arguments, ensure_ascii=False)})]", err=True)
                elif event.type == "tool_result":
                    click.echo(f"[{'error' if event.error else 'result'}: {event.content[:500]}]", err=True)
                elif event.type == "answer":
                    answer = event.content
                    yield answer
        finally:
            self.messages += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]


__all__ = ["AgentSession", "load_function"]

"""Chat with tools on a local model: render the tools with the model's template, constrain
calls with a grammar, parse the family's native call syntax into an OpenAI message."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from .formats import ToolFormat, detect_format, get_format
from .formats.generic import GenericFormat
from .grammar import build_tool_grammar, parse_tool_choice
from .parser import StreamParser
from .tools import as_tools

if TYPE_CHECKING:
    from ..generation.config import GenerationConfig
    from ..generation.llm import LLM, OnToken


def tool_format(llm: LLM, name: str | None = None) -> ToolFormat:
    """The format of ``llm``'s model (from its chat template), or the one named."""
    return get_format(name) if name else detect_format(llm.template.source)


def prepare(llm: LLM, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any], tool_choice: Any = "auto",
            parallel_tool_calls: bool = True, tool_format_name: str | None = None) -> dict[str, Any]:
    """Everything a tool-using generation needs: prompt, format, generation settings, tool names."""
    tool_defs = [t.to_dict() for t in as_tools(tools)]
    mode, _ = parse_tool_choice(tool_choice, tool_defs)
    fmt = tool_format(llm, tool_format_name)
    msgs = [dict(m) for m in messages]
    rendered_tools = tool_defs if mode != "none" else None
    if isinstance(fmt, GenericFormat) and rendered_tools:
        msgs = _with_system(msgs, fmt.system_prompt(rendered_tools))
        rendered_tools = None  # the template has no place for them
    prompt = llm.chat_prompt(msgs, tools=rendered_tools)
    settings: dict[str, Any] = {"parse_special": True}
    grammar = build_tool_grammar(fmt, tool_defs, tool_choice, parallel_tool_calls)
    if grammar is not None:
        settings["grammar"] = grammar.gbnf
        settings["grammar_triggers"] = grammar.trigger_patterns
    thinking = fmt.think is not None and prompt.rstrip().endswith(fmt.think[0])
    names = {t["function"]["name"] for t in tool_defs} if mode != "none" else set()
    return {"prompt": prompt, "format": fmt, "settings": settings, "tool_names": names, "thinking": thinking}


def _with_system(messages: list[dict], text: str) -> list[dict]:
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0], content=f"{messages[0].get('content') or ''}\n\n{text}".strip())
        return [first] + messages[1:]
    return [{"role": "system", "content": text}] + messages


def chat_with_tools(llm: LLM, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any], tool_choice: Any = "auto",
                    stream: bool = False, parallel_tool_calls: bool = True, tool_format: str | None = None,
                    config: GenerationConfig | None = None, on_token: OnToken | None = None,
                    **overrides: Any) -> dict[str, Any] | Iterator[dict[str, Any]]:
    """The assistant's OpenAI-shaped message (or its deltas when ``stream``).

    ``tool_format`` names a format instead of detecting it from the template;
    ``parallel_tool_calls`` False lets a forced reply hold one call only.
    """
    job = prepare(llm, messages, tools, tool_choice, parallel_tool_calls, tool_format)
    gen = _deltas(llm, job, config, on_token, overrides)
    if stream:
        return gen
    for _ in gen:
        pass
    return job["parser"].message.to_dict()


def _deltas(llm: LLM, job: dict[str, Any], config: GenerationConfig | None, on_token: OnToken | None,
            overrides: dict[str, Any]) -> Iterator[dict[str, Any]]:
    parser = StreamParser(job["format"], job["tool_names"], job["thinking"])
    job["parser"] = parser
    chunks = llm.stream(job["prompt"], config, on_token=on_token, **{**overrides, **job["settings"]})
    for chunk in chunks:
        yield from parser.push(chunk)
    yield from parser.finish()
    if parser.message.tool_calls and llm.last_stats is not None:
        llm.last_stats.finish_reason = "tool_calls"

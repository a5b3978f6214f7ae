"""Chat with tools on a local model: render the tools with the model's template, constrain
calls with a grammar, parse the family's native call syntax into an OpenAI message."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from .call_check import CallReview
from .formats import ToolFormat, detect_format, get_format
from .formats.generic import GenericFormat
from .grammar import build_tool_grammar, parse_tool_choice
from .messages import ParsedMessage, ToolCall
from .parser import StreamParser, parse_reply
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
    msgs = original = [dict(m) for m in messages]
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
    return {"prompt": prompt, "format": fmt, "settings": settings, "tool_names": names, "thinking": thinking,
            "mode": mode, "tools": tool_defs, "messages": original, "parallel": parallel_tool_calls}


def _with_system(messages: list[dict], text: str) -> list[dict]:
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0], content=f"{messages[0].get('content') or ''}\n\n{text}".strip())
        return [first] + messages[1:]
    return [{"role": "system", "content": text}] + messages


def chat_with_tools(llm: LLM, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any], tool_choice: Any = "auto",
                    stream: bool = False, parallel_tool_calls: bool = True, tool_format: str | None = None,
                    config: GenerationConfig | None = None, on_token: OnToken | None = None,
                    check_calls: bool = True, **overrides: Any) -> dict[str, Any] | Iterator[dict[str, Any]]:
    """The assistant's OpenAI-shaped message (or its deltas when ``stream``).

    ``tool_format`` names a format instead of detecting it from the template;
    ``parallel_tool_calls`` False lets a forced reply hold one call only. Under "auto",
    ``check_calls`` drops calls whose arguments come from nowhere and completes replies that
    name a tool without calling it (see llamapy.agent.call_check).
    """
    job = prepare(llm, messages, tools, tool_choice, parallel_tool_calls, tool_format)
    job["check"] = check_calls and job["mode"] == "auto" and bool(job["tools"])
    gen = _deltas(llm, job, config, on_token, overrides)
    if stream:
        return gen
    for _ in gen:
        pass
    return job["message"].to_dict()


def _deltas(llm: LLM, job: dict[str, Any], config: GenerationConfig | None, on_token: OnToken | None,
            overrides: dict[str, Any]) -> Iterator[dict[str, Any]]:
    parser = StreamParser(job["format"], job["tool_names"], job["thinking"])
    job["message"] = message = ParsedMessage()  # what has been sent
    check = job["check"]
    held: list[ToolCall] = []  # under check, calls wait for the end of the reply
    chunks = llm.stream(job["prompt"], config, on_token=on_token, **{**overrides, **job["settings"]})
    for chunk in chunks:
        for delta in parser.push(chunk):
            yield from _send(message, delta, held if check else None)
    for delta in parser.finish():
        yield from _send(message, delta, held if check else None)
    stats = llm.last_stats
    if check:
        review = CallReview(job["messages"], job["tools"])
        calls = review.keep(held)
        if not held and review.wants_call(message):
            calls = review.keep(_forced_calls(llm, job, parser.text, config, overrides))
        for call in calls:
            yield from _send(message, call_delta(len(message.tool_calls), call))
        if held and not calls:
            yield from _reply_without_tools(llm, job, message, config, on_token, overrides)
        add_stats(stats, llm.last_stats)
        llm.last_stats = stats
    if message.tool_calls and stats is not None:
        stats.finish_reason = "tool_calls"


def _send(message: ParsedMessage, delta: dict[str, Any], held: list[ToolCall] | None = None
          ) -> Iterator[dict[str, Any]]:
    """Record ``delta`` in the sent message and pass it on (calls go to ``held`` instead, if given)."""
    for key in ("reasoning_content", "content"):
        if delta.get(key):
            setattr(message, key, getattr(message, key) + delta[key])
    for tc in delta.get("tool_calls") or ():
        call = ToolCall(tc["function"]["name"], tc["function"]["arguments"], tc["id"])
        if held is not None:
            held.append(call)
            return
        message.tool_calls.append(call)
    yield delta


def call_delta(index: int, call: ToolCall) -> dict[str, Any]:
    """The OpenAI stream delta of a whole call."""
    return {"tool_calls": [{"index": index, "id": call.id, "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments}}]}


def _forced_calls(llm: LLM, job: dict[str, Any], text: str, config: GenerationConfig | None,
                  overrides: dict[str, Any]) -> list[ToolCall]:
    """The calls the model writes when, after ``text``, it must call (the tool grammar from the first token)."""
    fmt = job["format"]
    forced = forced_call_grammar(job)
    if forced is None:
        return []
    settings = {**overrides, "parse_special": True, "grammar": forced, "grammar_triggers": ()}
    out = llm.generate(continued_prompt(job["prompt"], text), config, **settings)
    return parse_reply(fmt, out, job["tool_names"]).tool_calls


def forced_call_grammar(job: Mapping[str, Any]) -> str | None:
    """The grammar that makes the model call one of the job's tools from the first token (None when
    the format has no call grammar)."""
    if not job["format"].grammar:
        return None
    grammar = build_tool_grammar(job["format"], job["tools"], "required", job["parallel"])
    return grammar.gbnf if grammar is not None else None


def continued_prompt(prompt: str, reply: str) -> str:
    """The prompt that goes on after ``reply``, on a new line (where a forced call is written)."""
    return prompt + reply.rstrip() + "\n"


def _reply_without_tools(llm: LLM, job: dict[str, Any], message: ParsedMessage, config: GenerationConfig | None,
                         on_token: OnToken | None, overrides: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The reply the model gives when it has no tools (what replaces calls from nowhere)."""
    plain = llm.chat_prompt(job["messages"])
    parser = StreamParser(job["format"], (), job["thinking"])
    sep = "\n\n" if message.content.strip() else ""
    for chunk in llm.stream(plain, config, on_token=on_token, **{**overrides, "parse_special": True}):
        for delta in parser.push(chunk):
            if sep and delta.get("content"):
                delta["content"], sep = sep + delta["content"], ""
            yield from _send(message, delta)
    for delta in parser.finish():
        yield from _send(message, delta)


def add_stats(total: Any, extra: Any) -> None:
    """Count a follow-up generation in the reply's statistics."""
    if total is None or extra is None or extra is total:
        return
    total.completion_tokens += extra.completion_tokens
    total.generation_seconds += extra.prompt_seconds + extra.generation_seconds
    total.tokens += extra.tokens
    total.finish_reason = extra.finish_reason

"""The OpenAI completions protocol on llamapy's engine, without any transport.

A request (a plain dict shaped like OpenAI's JSON) becomes a prompt and a GenerationConfig;
results become OpenAI response objects (plain dicts, ready for JSON). The HTTP server and
the in-process client share this module, so both answer the same request the same way.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Iterable, Mapping, Sequence

from ..errors import LlamaError
from ..generation.chat_template import ChatTemplate
from ..generation.config import GenerationConfig, GenerationStats, TokenLogprob

# OpenAI (and llama-server) request fields that map one to one onto GenerationConfig.
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "typical_p", "presence_penalty", "frequency_penalty",
                   "repeat_penalty", "repeat_last_n", "seed", "mirostat", "mirostat_tau", "mirostat_eta",
                   "ignore_eos", "grammar")
JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}


class RequestError(LlamaError, ValueError):
    """A request the engine cannot serve as asked (an HTTP 400); ``param`` names the culprit field."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param = param
        self.code = code


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


# -- requests ---------------------------------------------------------------------------------
def generation_config(request: Mapping[str, Any], base: GenerationConfig, *, n_vocab: int,
                      max_tokens_limit: int | None = None, max_tokens_cap: int | None = None,
                      chat: bool = True) -> GenerationConfig:
    """The settings a chat or completions request asks for, on top of the server's defaults.

    A ``max_tokens`` above ``max_tokens_limit`` is refused; one above ``max_tokens_cap`` (a
    sequence's context: generation ends there anyway) is lowered to it.
    """
    overrides: dict[str, Any] = {k: request[k] for k in SAMPLING_FIELDS if request.get(k) is not None}
    max_tokens = request.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = request.get("max_tokens")
    if max_tokens is not None:
        if max_tokens < 0:
            raise RequestError("max_tokens must be >= 0", "max_tokens")
        if max_tokens_limit is not None and max_tokens > max_tokens_limit:
            raise RequestError(f"max_tokens is {max_tokens}, above this server's limit of {max_tokens_limit}",
                               "max_tokens")
        overrides["max_tokens"] = max_tokens
    limit = min(x for x in (max_tokens_limit, max_tokens_cap, overrides.get("max_tokens", base.max_tokens))
                if x is not None)
    if limit != base.max_tokens:
        overrides["max_tokens"] = limit
    stop = request.get("stop")
    if stop is not None:
        stops = (stop,) if isinstance(stop, str) else tuple(stop)
        if any(not isinstance(s, str) or not s for s in stops):
            raise RequestError("stop sequences must be non-empty strings", "stop")
        overrides["stop_sequences"] = stops
    if request.get("logit_bias"):
        overrides["logit_bias"] = _logit_bias(request["logit_bias"], n_vocab)
    overrides.update(_logprobs(request, chat))
    schema = _response_schema(request.get("response_format"))
    if schema is not None:
        if overrides.get("grammar"):
            raise RequestError("give either grammar or response_format, not both", "response_format")
        overrides.update(json_schema=schema, grammar=None)
    if chat:
        overrides["parse_special"] = True  # the template's control tokens are tokens, not text
    try:
        cfg = base.replace(**overrides)
        cfg.validate()
        cfg.grammar_text()  # a schema that cannot become a grammar fails here, before it is queued
    except (TypeError, ValueError) as e:
        raise RequestError(str(e), "response_format" if schema is not None else None) from None
    return cfg


def _logit_bias(bias: Mapping[Any, Any], n_vocab: int) -> dict[int, float]:
    out: dict[int, float] = {}
    for key, value in bias.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise RequestError(f"logit_bias keys must be token ids, got {key!r}", "logit_bias") from None
        if not 0 <= token < n_vocab:
            raise RequestError(f"logit_bias token id {token} is out of range (vocab has {n_vocab} tokens)",
                               "logit_bias")
        if not isinstance(value, (int, float)) or not -100 <= value <= 100:
            raise RequestError("logit_bias values must be numbers from -100 to 100", "logit_bias")
        out[token] = float(value)
    return out


def _logprobs(request: Mapping[str, Any], chat: bool) -> dict[str, Any]:
    if chat:
        if not request.get("logprobs"):
            if request.get("top_logprobs"):
                raise RequestError("top_logprobs needs logprobs: true", "top_logprobs")
            return {}
        return {"logprobs": int(request.get("top_logprobs") or 0)}
    n = request.get("logprobs")
    return {} if n is None else {"logprobs": int(n)}


def _response_schema(fmt: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not fmt:
        return None
    kind = fmt.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return fmt.get("schema") or JSON_OBJECT_SCHEMA
    if kind == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if schema is None:
            raise RequestError("response_format json_schema needs json_schema.schema", "response_format")
        return dict(schema)
    raise RequestError(f"unknown response_format type {kind!r}: use text, json_object or json_schema",
                       "response_format")


def chat_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages as the chat template wants them: text content, 'developer' read as 'system'."""
    if not messages:
        raise RequestError("messages must hold at least one message", "messages")
    out = []
    for m in messages:
        m = {k: v for k, v in dict(m).items() if v is not None}
        if m.get("role") == "developer":
            m["role"] = "system"
        content = m.get("content")
        if isinstance(content, list):
            m["content"] = _text_of_parts(content)
        out.append(m)
    return out


def _text_of_parts(parts: Iterable[Any]) -> str:
    texts = []
    for part in parts:
        if not isinstance(part, Mapping) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
            raise RequestError(f"content parts of type {kind!r} are not supported: this server takes text",
                               "messages")
        texts.append(str(part.get("text", "")))
    return "".join(texts)


def chat_prompt(template: ChatTemplate, messages: Sequence[Mapping[str, Any]],
                tools: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The prompt text of a conversation (template errors become RequestError)."""
    try:
        return template.render(chat_messages(messages), add_generation_prompt=True, tools=tools)
    except RequestError:
        raise
    except LlamaError as e:
        raise RequestError(str(e), "messages") from None


@dataclass
class ToolJob:
    """A chat with tools: its prompt, the settings that constrain calls, and how to read the reply.

    Under "auto", ``review`` checks the model's choice (see llamapy.agent.call_check): ``plain_prompt``
    asks for the reply without tools, ``forced_grammar`` forces a call after a reply that names a tool.
    """

    prompt: str
    settings: dict[str, Any]
    format: Any
    tool_names: set[str]
    thinking: bool
    review: Any = None
    plain_prompt: str = ""
    forced_grammar: str | None = None

    def parser(self) -> Any:
        """A streaming parser turning the reply's text into OpenAI deltas (content, tool_calls)."""
        from ..agent.parser import StreamParser

        return StreamParser(self.format, self.tool_names, self.thinking)

    def parse(self, text: str, calls: bool = True) -> Any:
        """The ParsedMessage of a whole reply (``calls`` False: all of it is text and reasoning)."""
        from ..agent.parser import parse_reply

        return parse_reply(self.format, text, self.tool_names if calls else (), self.thinking)

    def message(self, text: str) -> dict[str, Any]:
        """The OpenAI assistant message of a whole reply (calls parsed out of the text)."""
        return self.parse(text).to_dict()


def tool_job(template: ChatTemplate, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]],
             tool_choice: Any = "auto", parallel_tool_calls: bool = True, check_calls: bool = True) -> ToolJob:
    """Prepare a chat with tools in the model family's native call format (grammar-forced when
    ``tool_choice`` requires a call, checked under "auto" unless ``check_calls`` is False)."""
    from ..agent.call_check import CallReview
    from ..agent.chat import forced_call_grammar, prepare

    renderer = SimpleNamespace(template=template,
                               chat_prompt=lambda msgs, tools=None: chat_prompt(template, msgs, tools))
    try:
        job = prepare(renderer, chat_messages(messages), list(tools), tool_choice, parallel_tool_calls)
        checked = check_calls and job["mode"] == "auto" and bool(job["tools"])
        review = CallReview(job["messages"], job["tools"]) if checked else None
        extra = {"review": review, "plain_prompt": renderer.chat_prompt(job["messages"]),
                 "forced_grammar": forced_call_grammar(job)} if checked else {}
    except RequestError:
        raise
    except (ValueError, TypeError, KeyError, LlamaError) as e:
        raise RequestError(str(e), "tools") from None
    return ToolJob(job["prompt"], job["settings"], job["format"], job["tool_names"], job["thinking"], **extra)


def review_follow_up(tools: ToolJob, cfg: Any, text: str, reply: Any) -> tuple[str, Any] | None:
    """The generation the check of an "auto" reply asks for (llamapy.agent.call_check), as
    (prompt, config): a forced call after a reply that names a tool, or the reply without tools
    that replaces calls from nowhere. None when the reply stands as it is."""
    from ..agent.chat import continued_prompt

    if tools.review.wants_call(reply) and tools.forced_grammar is not None:
        return continued_prompt(tools.prompt, text), cfg.replace(grammar=tools.forced_grammar, grammar_triggers=())
    if reply.tool_calls and not tools.review.keep(reply.tool_calls):
        return tools.plain_prompt, cfg.replace(grammar=None, grammar_triggers=())
    return None


def apply_review(tools: ToolJob, reply: Any, follow_up: tuple[str, Any] | None, out: str = "") -> str:
    """Make ``reply`` what the check decided, given the follow-up's text ``out``; the content it adds."""
    if follow_up is None:
        reply.tool_calls = tools.review.keep(reply.tool_calls)
        return ""
    if follow_up[0] != tools.plain_prompt:
        reply.tool_calls = tools.review.keep(tools.parse(out).tool_calls)
        return ""
    content = tools.parse(out, calls=False).content
    more = ("\n\n" if reply.content.strip() and content else "") + content
    reply.tool_calls, reply.content = [], reply.content + more
    return more


def chat_deltas(parser: Any, text: str, done: bool) -> list[dict[str, Any]]:
    """The deltas of a piece of reply text: the text itself, or what a tool parser makes of it."""
    if parser is None:
        return [{"content": text}] if text else []
    return (parser.push(text) if text else []) + (parser.finish() if done else [])


def completion_prompts(prompt: Any) -> list[str]:
    """The prompts of a completions request (a string or a list of strings)."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else None
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise RequestError("prompt must be a string or a non-empty list of strings", "prompt")
    return prompts


def check_single_choice(request: Mapping[str, Any]) -> None:
    for name in ("n", "best_of"):
        if request.get(name) not in (None, 1):
            raise RequestError(f"{name} must be 1: this server returns one choice per prompt", name)


# -- responses --------------------------------------------------------------------------------
FINISH_REASONS = {"stop": "stop", "length": "length", "cancelled": "stop", "tool_calls": "tool_calls"}


def finish_reason(stats: GenerationStats | None) -> str:
    return FINISH_REASONS.get(stats.finish_reason if stats else "stop", "stop")


def usage(stats_list: Sequence[GenerationStats]) -> dict[str, Any]:
    prompt = sum(s.prompt_tokens for s in stats_list)
    completion = sum(s.completion_tokens for s in stats_list)
    cached = sum(s.prompt_tokens - s.prompt_tokens_decoded for s in stats_list)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def _top(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def chat_logprobs(items: Sequence[TokenLogprob]) -> dict[str, Any]:
    """The ``logprobs`` object of a chat choice or chunk."""
    return {"content": [{**_top(lp.text, lp.logprob), "top_logprobs": [_top(t, p) for _, t, p in lp.top]}
                        for lp in items], "refusal": None}


def completion_logprobs(items: Sequence[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """The legacy ``logprobs`` object of a completions choice."""
    offsets, pos = [], offset
    for lp in items:
        offsets.append(pos)
        pos += len(lp.text)
    return {"tokens": [lp.text for lp in items], "token_logprobs": [lp.logprob for lp in items],
            "top_logprobs": [{t: p for _, t, p in lp.top} for lp in items], "text_offset": offsets}


def chat_completion(rid: str, model: str, message: Mapping[str, Any], stats: GenerationStats,
                    logprobs: bool, created: int | None = None, finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "message": dict(message), "finish_reason": finish or finish_reason(stats),
              "logprobs": chat_logprobs(stats.logprobs) if logprobs else None}
    return {"id": rid, "object": "chat.completion", "created": created or int(time.time()), "model": model,
            "choices": [choice], "usage": usage([stats]), "system_fingerprint": None}


def chat_chunk(rid: str, model: str, created: int, delta: Mapping[str, Any], finish: str | None = None,
               logprobs: Sequence[TokenLogprob] | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": dict(delta), "finish_reason": finish,
              "logprobs": chat_logprobs(logprobs) if logprobs is not None else None}
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [choice],
            "system_fingerprint": None}


def usage_chunk(rid: str, model: str, created: int, stats_list: Sequence[GenerationStats],
                kind: str = "chat.completion.chunk") -> dict[str, Any]:
    return {"id": rid, "object": kind, "created": created, "model": model, "choices": [],
            "usage": usage(stats_list), "system_fingerprint": None}


def completion_choice(index: int, text: str, stats: GenerationStats | None, logprobs: bool,
                      offset: int = 0, finish: bool = True) -> dict[str, Any]:
    lp = completion_logprobs(stats.logprobs, offset) if logprobs and stats is not None else None
    return {"index": index, "text": text, "logprobs": lp, "finish_reason": finish_reason(stats) if finish else None}


def completion(rid: str, model: str, choices: list[dict[str, Any]], stats_list: Sequence[GenerationStats],
               created: int | None = None) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": created or int(time.time()), "model": model,
            "choices": choices, "usage": usage(stats_list), "system_fingerprint": None}

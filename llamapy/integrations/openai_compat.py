"""OpenAICompatibleClient: OpenAI's client API answered in-process by a local model.

``client.chat.completions.create(...)``, ``client.completions.create(...)`` and
``client.models.list()`` take the ``openai`` package's arguments and return its own response
types when it is installed (objects with the same attributes otherwise). There is no HTTP:
requests go straight to a BatchGenerator, so threads may share one client.
"""
from __future__ import annotations

import itertools
import os
import queue
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..agent.chat import add_stats, call_delta
from ..generation.batching import BatchEvent, BatchGenerator, BatchRequest
from ..generation.chat_template import ChatTemplate
from ..generation.config import GenerationConfig, GenerationStats
from . import openai_protocol as proto
from .openai_protocol import RequestError

_CHAT_ARGS = {"messages", "model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n", "stop",
              "logprobs", "top_logprobs", "response_format", "tools", "tool_choice", "parallel_tool_calls", "user",
              "logit_bias", "extra_body", *proto.SAMPLING_FIELDS}
_COMPLETION_ARGS = {"prompt", "model", "stream", "stream_options", "max_tokens", "n", "stop", "logprobs", "echo",
                    "best_of", "suffix", "user", "logit_bias", "extra_body", *proto.SAMPLING_FIELDS}


def _openai_type(path: str) -> Any:
    """An ``openai.types`` class, or None without the openai package."""
    module, _, name = path.rpartition(".")
    try:
        import importlib

        return getattr(importlib.import_module(f"openai.types{module and '.' + module}"), name)
    except (ImportError, AttributeError):
        return None


class _Record:
    """Attribute access over an OpenAI response dict (when the openai package is not installed)."""

    def __init__(self, data: Mapping[str, Any]):
        self._data = dict(data)
        for key, value in data.items():
            setattr(self, key, _wrap(value))

    def model_dump(self) -> dict[str, Any]:
        return dict(self._data)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"


def _wrap(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _Record(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _as(type_path: str, data: dict[str, Any]) -> Any:
    cls = _openai_type(type_path)
    return cls.model_validate(data) if cls is not None else _Record(data)


def _arguments(kwargs: dict[str, Any], allowed: set[str], what: str) -> dict[str, Any]:
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(f"{what}.create() got unexpected argument(s): {', '.join(unknown)}")
    extra = kwargs.pop("extra_body", None) or {}
    return {**{k: v for k, v in kwargs.items() if v is not None}, **extra}


class _Stream:
    """The events of requests running in the generator, as an iterator; closing it cancels them."""

    def __init__(self, client: OpenAICompatibleClient, jobs: list[tuple[str, GenerationConfig]]):
        self._gen = client._generator
        self._events: queue.Queue[tuple[int, BatchEvent]] = queue.Queue()
        self._ids = [next(client._ids) for _ in jobs]
        self._open = set(range(len(jobs)))
        for index, (rid, (prompt, cfg)) in enumerate(zip(self._ids, jobs)):
            self._gen.submit(BatchRequest(rid, prompt, config=cfg,
                                          on_event=lambda ev, i=index: self._events.put((i, ev))))

    def __iter__(self) -> Iterator[tuple[int, BatchEvent]]:
        try:
            while self._open:
                index, event = self._events.get()
                if event.done:
                    self._open.discard(index)
                    if event.error is not None:
                        raise event.error
                yield index, event
        finally:
            for index in self._open:
                self._gen.cancel(self._ids[index])

    def collect(self) -> list[tuple[str, GenerationStats]]:
        texts: dict[int, list[str]] = {}
        stats: dict[int, GenerationStats] = {}
        for index, event in self:
            texts.setdefault(index, []).append(event.text)
            if event.done:
                stats[index] = event.stats
        return [("".join(texts.get(i, [])), stats[i]) for i in range(len(self._ids))]


class _ChatCompletions:
    def __init__(self, client: OpenAICompatibleClient):
        self._client = client

    def create(self, **kwargs: Any) -> Any:
        """Like ``openai.OpenAI().chat.completions.create``: a ChatCompletion, or an iterator of
        ChatCompletionChunk with ``stream=True``."""
        c = self._client
        req = _arguments(kwargs, _CHAT_ARGS, "chat.completions")
        if "messages" not in req:
            raise RequestError("messages is required", "messages")
        proto.check_single_choice(req)
        cfg = proto.generation_config(req, c._generator.config, chat=True, **c._limits())
        tools = None
        if req.get("tools") and req.get("tool_choice") != "none":
            tools = proto.tool_job(c.template, req["messages"], req["tools"], req.get("tool_choice", "auto"),
                                   req.get("parallel_tool_calls", True))
            prompt, cfg = tools.prompt, cfg.replace(**tools.settings)
        else:
            prompt = proto.chat_prompt(c.template, req["messages"])
        rid, created, model = proto.new_id("chatcmpl"), int(time.time()), c.model_name
        logprobs = cfg.logprobs is not None
        stream = _Stream(c, [(prompt, cfg)])
        if req.get("stream"):
            usage = bool((req.get("stream_options") or {}).get("include_usage"))
            return self._chunks(stream, rid, model, created, usage, logprobs, tools, cfg)
        (text, stats), = stream.collect()
        if tools is not None and tools.review is not None:
            reply = tools.parse(text)
            self._review(tools, cfg, text, reply, stats)
            message = reply.to_dict()
        else:
            message = tools.message(text) if tools is not None else {"role": "assistant", "content": text}
        finish = "tool_calls" if message.get("tool_calls") else None
        return _as("chat.ChatCompletion", proto.chat_completion(rid, model, message, stats, logprobs, created, finish))

    def _review(self, tools: proto.ToolJob, cfg: Any, text: str, reply: Any, stats: GenerationStats) -> str:
        """Check an "auto" reply in place (llamapy.agent.call_check); the content it adds."""
        follow_up = proto.review_follow_up(tools, cfg, text, reply)
        if follow_up is None:
            return proto.apply_review(tools, reply, None)
        (out, extra), = _Stream(self._client, [follow_up]).collect()
        add_stats(stats, extra)
        return proto.apply_review(tools, reply, follow_up, out)

    def _chunks(self, stream: _Stream, rid: str, model: str, created: int, usage: bool, logprobs: bool,
                tools: proto.ToolJob | None, cfg: Any = None) -> Iterator[Any]:
        chunk = lambda data: _as("chat.ChatCompletionChunk", data)  # noqa: E731
        parser = tools.parser() if tools is not None else None
        review = tools is not None and tools.review is not None
        yield chunk(proto.chat_chunk(rid, model, created, {"role": "assistant", "content": ""}))
        for _, event in stream:
            for i, delta in enumerate(proto.chat_deltas(parser, event.text, event.done)):
                if review and "tool_calls" in delta:
                    continue  # the calls are in parser.message: reviewed below
                yield chunk(proto.chat_chunk(rid, model, created, delta,
                                             logprobs=event.logprobs if logprobs and i == 0 else None))
            if event.done and review:
                more = self._review(tools, cfg, parser.text, parser.message, event.stats)
                if more:
                    yield chunk(proto.chat_chunk(rid, model, created, {"content": more}))
                for index, call in enumerate(parser.message.tool_calls):
                    yield chunk(proto.chat_chunk(rid, model, created, call_delta(index, call)))
            if event.done:
                calls = parser is not None and parser.message.tool_calls
                finish = "tool_calls" if calls else proto.finish_reason(event.stats)
                yield chunk(proto.chat_chunk(rid, model, created, {}, finish))
                if usage:
                    yield chunk(proto.usage_chunk(rid, model, created, [event.stats]))


class _Chat:
    def __init__(self, client: OpenAICompatibleClient):
        self.completions = _ChatCompletions(client)


class _Completions:
    def __init__(self, client: OpenAICompatibleClient):
        self._client = client

    def create(self, **kwargs: Any) -> Any:
        """Like ``openai.OpenAI().completions.create``: a Completion, or an iterator of them with ``stream=True``."""
        c = self._client
        req = _arguments(kwargs, _COMPLETION_ARGS, "completions")
        proto.check_single_choice(req)
        if req.get("suffix"):
            raise RequestError("suffix (fill-in-the-middle) is not supported", "suffix")
        prompts = proto.completion_prompts(req.get("prompt"))
        cfg = proto.generation_config(req, c._generator.config, chat=False, **c._limits())
        rid, created, model = proto.new_id("cmpl"), int(time.time()), c.model_name
        logprobs = cfg.logprobs is not None
        stream = _Stream(c, [(p, cfg) for p in prompts])
        echo = bool(req.get("echo"))
        if req.get("stream"):
            return self._chunks(stream, prompts if echo else None, rid, model, created, logprobs)
        choices, stats_list = [], []
        for i, (text, stats) in enumerate(stream.collect()):
            head = prompts[i] if echo else ""
            choices.append(proto.completion_choice(i, head + text, stats, logprobs, len(head)))
            stats_list.append(stats)
        return _as("Completion", proto.completion(rid, model, choices, stats_list, created))

    @staticmethod
    def _chunks(stream: _Stream, echo: list[str] | None, rid: str, model: str, created: int,
                logprobs: bool) -> Iterator[Any]:
        def chunk(index: int, text: str, event: BatchEvent | None, finish: bool) -> Any:
            choice = proto.completion_choice(index, text, event.stats if finish and event else None, False,
                                             finish=finish)
            if logprobs and event is not None and event.logprobs:
                choice["logprobs"] = proto.completion_logprobs(event.logprobs)
            return _as("Completion", {"id": rid, "object": "text_completion", "created": created, "model": model,
                                      "choices": [choice]})

        for i, prompt in enumerate(echo or ()):
            yield chunk(i, prompt, None, False)
        for index, event in stream:
            if event.text:
                yield chunk(index, event.text, event, False)
            if event.done:
                yield chunk(index, "", event, True)


class _Models:
    def __init__(self, client: OpenAICompatibleClient):
        self._client = client

    def list(self) -> Any:
        c = self._client
        card = {"id": c.model_name, "object": "model", "created": c.created, "owned_by": "llamapy"}
        cls = _openai_type("Model")
        return [cls.model_validate(card) if cls is not None else _Record(card)]


class OpenAICompatibleClient:
    """A drop-in for ``openai.OpenAI()`` that runs ``model_path`` in this process.

    ``temperature`` and ``max_tokens`` are the defaults of requests that do not set them;
    ``n_parallel`` requests (from several threads) are generated at once.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, temperature: float = 0.7, max_tokens: int = 512,
                 n_gpu_layers: int = 99, *, n_ctx: int = 4096, n_parallel: int = 1, chat_template: str | None = None,
                 **settings: Any):
        settings = {"repeat_penalty": 1.0, "add_bos": None, **settings}  # OpenAI's semantics unless told
        self._generator = BatchGenerator(model_path, n_ctx=n_ctx, n_seq_max=n_parallel, n_gpu_layers=n_gpu_layers,
                                         temperature=temperature, max_tokens=max_tokens, **settings)
        try:
            self.template = ChatTemplate.for_model(self._generator.model, chat_template)
            self._generator.start()
        except BaseException:
            self._generator.close()
            raise
        self.model_name = Path(str(self._generator.model.path)).name
        self.created = int(time.time())
        self._ids = itertools.count()
        self.chat = _Chat(self)
        self.completions = _Completions(self)
        self.models = _Models(self)

    def _limits(self) -> dict[str, Any]:
        return {"n_vocab": self._generator.vocab.n_tokens, "max_tokens_cap": self._generator.n_ctx_seq}

    def close(self) -> None:
        self._generator.close()

    def __enter__(self) -> OpenAICompatibleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["OpenAICompatibleClient", "RequestError"]

"""LLM: load a model once and generate from it, streaming, with prefix reuse between calls."""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .batch import Batch
from .catalog import DEFAULT_MODEL, pull
from .chat_template import ChatTemplate, Message
from .config import GenerationConfig, GenerationStats, TokenLogprob
from .context import Context
from .errors import PromptTooLongError
from .model import Model

OnToken = Callable[[int, str], Any]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    x = np.asarray(a[:n], dtype=np.int64)
    y = np.asarray(b[:n], dtype=np.int64)
    diff = np.flatnonzero(x != y)
    return int(diff[0]) if diff.size else n


class _StopScanner:
    """Holds back text that could be the start of a stop sequence; finds complete ones."""

    def __init__(self, stops: Sequence[str]):
        self.stops = list(stops)
        self.pending = ""

    def push(self, text: str) -> tuple[str, bool]:
        """Add text; return (text safe to emit now, whether a stop sequence was found)."""
        self.pending += text
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, False
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out = self.pending[: min(hits)]
            self.pending = ""
            return out, True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(s[:k]):
                    hold = k
                    break
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class LLM:
    """A loaded model with one context, ready to generate.

    Keeps its KV cache between calls and decodes only the part of a new prompt that differs
    from what is cached, so turn N of a chat costs the new tokens, not the whole history.
    ``model_path`` None uses the default catalog model (fetched on first use).
    """

    def __init__(self, model_path: str | os.PathLike | None = None, *, config: GenerationConfig | None = None,
                 chat_template: str | None = None, progress: bool = False, **settings: Any):
        self.config = (config or GenerationConfig()).replace(**settings)
        self.config.validate()
        path = model_path if model_path is not None else pull(DEFAULT_MODEL, quiet=True)
        load = {} if self.config.n_gpu_layers is None else {"n_gpu_layers": self.config.n_gpu_layers}
        self.model = Model.from_file(path, progress=progress, **load)
        self.vocab = self.model.vocab
        self.template = ChatTemplate.for_model(self.model, chat_template)
        self.ctx: Context | None = None
        self._ctx_key: tuple | None = None
        self._cached: list[int] = []
        self._active: Iterator[str] | None = None
        self.last_stats: GenerationStats | None = None

    # -- resources ---------------------------------------------------------------------
    def close(self) -> None:
        if self._active is not None:
            self._active.close()
        if self.ctx is not None:
            self.ctx.close()
        self.model.close()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _context(self, cfg: GenerationConfig) -> Context:
        n_ctx = cfg.n_ctx or min(self.model.n_ctx_train, 4096)
        key = (n_ctx, cfg.n_batch)
        if self.ctx is None or self._ctx_key != key:
            if self.ctx is not None:
                self.ctx.close()
            self.ctx = Context(self.model, n_ctx=n_ctx, n_batch=cfg.n_batch, n_threads=cfg.n_threads)
            self._ctx_key = key
            self._cached = []
            self._batch = Batch(cfg.n_batch)
            self._one = Batch(1)
        elif cfg.n_threads and cfg.n_threads != self.ctx.n_threads:
            self.ctx.set_threads(cfg.n_threads)
        return self.ctx

    @property
    def n_ctx(self) -> int:
        return self._context(self.config).n_ctx

    # -- prompts -----------------------------------------------------------------------
    def tokenize(self, prompt: str, cfg: GenerationConfig | None = None) -> list[int]:
        cfg = cfg or self.config
        return self.vocab.tokenize_prompt(prompt, cfg.add_bos, cfg.parse_special)

    def chat_prompt(self, messages: Sequence[Message], **template_args: Any) -> str:
        """The prompt text the chat template makes of ``messages``."""
        return self.template.render(messages, add_generation_prompt=True, **template_args)

    # -- generation --------------------------------------------------------------------
    def __call__(self, prompt: str, stream: bool = False, **overrides: Any) -> str | Iterator[str]:
        return self.stream(prompt, **overrides) if stream else self.generate(prompt, **overrides)

    def generate(self, prompt: str, **overrides: Any) -> str:
        """The completion of ``prompt`` as one string."""
        return self.generate_with_stats(prompt, **overrides)[0]

    def generate_with_stats(self, prompt: str, **overrides: Any) -> tuple[str, GenerationStats]:
        stats = GenerationStats()
        text = "".join(self._start(prompt, overrides, stats, parse_special=None))
        return text, stats

    def stream(self, prompt: str, on_token: OnToken | None = None, **overrides: Any) -> Iterator[str]:
        """Text chunks as they are generated; never splits a character or leaks a stop sequence.

        Breaking out of the loop stops generation and leaves the cache consistent.
        """
        return self._start(prompt, overrides, GenerationStats(), parse_special=None, on_token=on_token)

    def chat(self, messages: Sequence[Message], stream: bool = False, **overrides: Any) -> str | Iterator[str]:
        """The assistant's reply to ``messages`` (rendered with the chat template)."""
        gen = self._chat(messages, overrides, GenerationStats())
        return gen if stream else "".join(gen)

    def chat_with_stats(self, messages: Sequence[Message], **overrides: Any) -> tuple[str, GenerationStats]:
        stats = GenerationStats()
        return "".join(self._chat(messages, overrides, stats)), stats

    def _chat(self, messages: Sequence[Message], overrides: dict, stats: GenerationStats,
              on_token: OnToken | None = None) -> Iterator[str]:
        on_token = overrides.pop("on_token", on_token)
        tools = overrides.pop("tools", None)
        prompt = self.template.render(messages, add_generation_prompt=True, tools=tools)
        return self._start(prompt, overrides, stats, parse_special=True, on_token=on_token)

    def _start(self, prompt: str, overrides: dict, stats: GenerationStats, parse_special: bool | None,
               on_token: OnToken | None = None) -> Iterator[str]:
        on_token = overrides.pop("on_token", on_token)
        cfg = self.config.replace(**overrides) if overrides else self.config
        cfg.validate()
        if parse_special is not None:
            cfg = cfg.replace(parse_special=parse_special)
        if self._active is not None:  # an abandoned stream: finish it so the cache is consistent
            self._active.close()
        ctx = self._context(cfg)
        tokens = self.tokenize(prompt, cfg)
        if not tokens:
            raise ValueError("the prompt is empty (no tokens): give some text, or set add_bos=True")
        if len(tokens) >= ctx.n_ctx:
            raise PromptTooLongError(f"the prompt has {len(tokens)} tokens but the context holds {ctx.n_ctx}: "
                                     f"shorten it or raise n_ctx (the model was trained on {self.model.n_ctx_train})")
        sampler = cfg.sampler(self.model)  # a bad grammar or schema fails here, before any decode
        gen = self._run(ctx, tokens, cfg, sampler, stats, on_token)
        self._active = gen
        return gen

    def _prefill(self, ctx: Context, tokens: list[int], cfg: GenerationConfig, stats: GenerationStats) -> None:
        keep = _common_prefix(self._cached, tokens)
        if keep == len(tokens):
            keep -= 1  # the last prompt token must be decoded again to get its logits
        if not ctx.memory.seq_rm(0, keep, -1):
            ctx.memory.clear()
            keep = 0
        del self._cached[keep:]
        batch = self._batch
        for start in range(keep, len(tokens), cfg.n_batch):
            chunk = tokens[start:start + cfg.n_batch]
            batch.clear()
            last = start + len(chunk) == len(tokens)
            batch.add_sequence(chunk, start, 0, "last" if last else "none")
            ctx.decode(batch)
            self._cached.extend(chunk)
        stats.prompt_tokens = len(tokens)
        stats.prompt_tokens_decoded = len(tokens) - keep

    def _shift(self, ctx: Context) -> None:
        """Make room by discarding the older half of the context (keeping the first token)."""
        n_keep = 1
        n_discard = (len(self._cached) - n_keep) // 2
        ctx.memory.seq_rm(0, n_keep, n_keep + n_discard)
        ctx.memory.seq_add(0, n_keep + n_discard, -1, -n_discard)
        del self._cached[n_keep:n_keep + n_discard]

    def _run(self, ctx: Context, tokens: list[int], cfg: GenerationConfig, sampler: Any, stats: GenerationStats,
             on_token: OnToken | None) -> Iterator[str]:
        self.last_stats = stats
        try:
            t0 = time.perf_counter()
            self._prefill(ctx, tokens, cfg, stats)
            stats.prompt_seconds = time.perf_counter() - t0
            out = TokenStream(self.vocab, cfg, stats, on_token, t0)
            one = self._one
            while not out.done:
                tok = sampler.sample(ctx, -1)
                text = out.push(ctx, -1, tok)
                if not out.done and len(self._cached) >= ctx.n_ctx:
                    if cfg.context_shift and ctx.memory.can_shift:
                        self._shift(ctx)
                    else:
                        out.finish_with("length")
                if not out.done:
                    one.clear()
                    one.add(tok, len(self._cached), 0, True)  # positions stay 0..len-1, also after a shift
                    ctx.decode(one)
                    self._cached.append(tok)
                if text:
                    yield text
            tail = out.tail()
            if tail:
                yield tail
        finally:
            stats.generation_seconds = time.perf_counter() - t0 - stats.prompt_seconds
            self._active = None


class TokenStream:
    """Turns the tokens of one generation into text: never splits a character, holds back
    possible stop sequences, ends on end-of-generation tokens, stop sequences or max_tokens,
    and keeps the statistics. Shared by LLM and the batch generator."""

    def __init__(self, vocab: Any, cfg: GenerationConfig, stats: GenerationStats, on_token: OnToken | None = None,
                 t0: float | None = None):
        self.vocab = vocab
        self.cfg = cfg
        self.stats = stats
        self.on_token = on_token
        self.t0 = time.perf_counter() if t0 is None else t0
        self.decoder = vocab.stream_decoder()
        self.stops = _StopScanner(cfg.stop_sequences)
        self.done = cfg.max_tokens == 0
        self.hit_stop = False
        stats.finish_reason = "length"

    def finish_with(self, reason: str) -> None:
        self.done = True
        self.stats.finish_reason = reason

    def push(self, ctx: Context, idx: int, tok: int) -> str:
        """Account for a sampled token; returns the text it completes ('' if none)."""
        stats = self.stats
        if stats.completion_tokens == 0:
            stats.time_to_first_token = time.perf_counter() - self.t0
        if self.vocab.is_eog(tok) and not self.cfg.ignore_eos:
            self.finish_with("stop")
            return ""
        if self.cfg.logprobs is not None:
            stats.logprobs.append(_logprob(self.vocab, ctx, idx, tok, self.cfg.logprobs))
        stats.completion_tokens += 1
        piece = self.decoder.feed(tok)
        if self.on_token is not None:
            self.on_token(tok, piece)
        text, self.hit_stop = self.stops.push(piece)
        if self.hit_stop:
            self.finish_with("stop")
        elif stats.completion_tokens >= self.cfg.max_tokens:
            self.finish_with("length")
        return text

    def tail(self) -> str:
        """What is left once generation ended: held-back text and a dangling byte."""
        if self.hit_stop:
            return ""
        tail, self.hit_stop = self.stops.push(self.decoder.flush())
        return tail if self.hit_stop else tail + self.stops.flush()


def _logprob(vocab: Any, ctx: Context, idx: int, tok: int, top_n: int) -> TokenLogprob:
    logits = ctx.logits(idx).astype(np.float64)
    m = logits.max()
    lse = m + math.log(np.exp(logits - m).sum())
    top = np.argsort(-logits)[:top_n] if top_n else []
    return TokenLogprob(tok, vocab.token_to_piece(tok), float(logits[tok] - lse),
                        [(int(t), vocab.token_to_piece(int(t)), float(logits[t] - lse)) for t in top])


def complete(prompt: str, model_path: str | os.PathLike | None = None, **settings: Any) -> str:
    """Load a model, complete ``prompt``, free the model. (Use :class:`LLM` to keep it loaded.)"""
    with LLM(model_path, **settings) as llm:
        return llm.generate(prompt)


def chat(messages: Sequence[Mapping[str, Any]], model_path: str | os.PathLike | None = None,
         **settings: Any) -> str:
    """Load a model, answer ``messages`` with its chat template, free the model."""
    with LLM(model_path, **settings) as llm:
        return llm.chat(messages)  # type: ignore[return-value]


__all__ = ["LLM", "TokenStream", "complete", "chat"]

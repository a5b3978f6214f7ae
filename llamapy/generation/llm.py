"""LLM: load a model once and generate from it, streaming, with prefix reuse between calls."""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .._ffi import set_verbose
from ..batch import Batch
from ..hub.catalog import DEFAULT_MODEL, pull
from .chat_template import ChatTemplate, Message
from .config import GenerationConfig, GenerationStats, TokenLogprob
from ..context import Context
from ..errors import PromptTooLongError
from ..model import Model
from .speculative import SpeculativeDecoder, make_speculator

OnToken = Callable[[str], Any]  # called with each piece of visible text


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    x = np.asarray(a[:n], dtype=np.int64)
    y = np.asarray(b[:n], dtype=np.int64)
    diff = np.flatnonzero(x != y)
    return int(diff[0]) if diff.size else n


def _can_resume(ctx: Context, seq_id: int, pos: int) -> bool:
    """Whether a sequence cut back to ``pos`` still holds every position the token at ``pos``
    attends to. A sliding-window cache overwrites positions that left the window, so it
    cannot go back past them: the prompt must then be decoded again (as llama-server does)."""
    n_swa = ctx.model.n_swa
    if pos == 0 or n_swa == 0:
        return True
    return 0 <= ctx.memory.seq_pos_min(seq_id) <= max(0, pos - n_swa + 1)


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

    Speculative decoding (same output, several tokens per decode when drafts hit):
    ``draft_model=`` a smaller model with the same vocabulary, or ``speculative="ngram"`` to
    draft from the text so far; ``n_draft`` caps the draft length, which adapts to what pays.

    Images and audio: ``mmproj=`` a projector file; chat messages may then hold OpenAI content
    parts (``image_url`` with file:// or data: URLs, raw bytes, numpy arrays, PIL images), and
    completions take ``media=[...]`` for the prompt's ``<__media__>`` markers (llamapy.mtmd).

    Many machines: ``rpc_servers=["host:port", ...]`` places layers on RPC servers (see
    llamapy.rpc), split by ``tensor_split`` across the remote devices, then local GPUs;
    ``n_gpu_layers`` layers go to them, the rest stay on this machine's CPU.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, config: GenerationConfig | None = None,
                 verbose: bool = False, *, chat_template: str | None = None, progress: bool = False,
                 draft_model: str | os.PathLike | Model | None = None, n_draft: int | None = None,
                 speculative: Any = None, mmproj: str | os.PathLike | None = None,
                 rpc_servers: str | Sequence[str] | None = None,
                 tensor_split: Sequence[float] | None = None, **settings: Any):
        self.config = (config or GenerationConfig()).replace(**settings)
        self.config.validate()
        if verbose:
            set_verbose(True)
        path = model_path if model_path is not None else pull(DEFAULT_MODEL, quiet=True)
        load = {} if self.config.n_gpu_layers is None else {"n_gpu_layers": self.config.n_gpu_layers}
        self.model = Model.from_file(path, progress=progress, rpc_servers=rpc_servers, tensor_split=tensor_split,
                                     **load)
        self.vocab = self.model.vocab
        self.template = ChatTemplate.for_model(self.model, chat_template)
        self._spec: SpeculativeDecoder | None = make_speculator(self.model, draft_model, speculative, n_draft,
                                                                self.config.n_gpu_layers)
        self.mtmd = None  # the projector for images/audio in prompts (mmproj=...)
        if mmproj is not None:
            from ..mtmd import MtmdContext

            self.mtmd = MtmdContext(mmproj, self.model, n_threads=self.config.n_threads)
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
        if self._spec is not None:
            self._spec.close()
        if self.mtmd is not None:
            self.mtmd.close()
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
        return self.vocab.tokenize_prompt(prompt, cfg.bos, cfg.parse_special)

    def chat_prompt(self, messages: Sequence[Message], **template_args: Any) -> str:
        """The prompt text the chat template makes of ``messages``."""
        return self.template.render(messages, add_generation_prompt=True, **template_args)

    def continuation_logprob(self, prompt: str, continuation: str) -> float:
        """log p(continuation | prompt): the sum of the continuation's token log-probabilities.

        Special tokens are parsed in both (chat markup scores as the model sees it); the prompt's
        cached prefix is reused, as in generation.
        """
        cfg = self.config.replace(parse_special=True)
        if self._active is not None:
            self._active.close()
        ctx = self._context(cfg)
        head = self.tokenize(prompt, cfg)
        tail = self.vocab.tokenize(continuation, add_special=False, parse_special=True)
        if not head or not tail:
            raise ValueError("continuation_logprob needs a non-empty prompt and continuation")
        if len(head) + len(tail) > ctx.n_ctx:
            raise PromptTooLongError(f"prompt and continuation have {len(head) + len(tail)} tokens but the "
                                     f"context holds {ctx.n_ctx}")
        self._prefill(ctx, head, cfg, GenerationStats())
        scored = [head[-1], *tail[:-1]]  # each predicts the next token; head[-1]'s logits come from the prefill
        total = _log_softmax_at(ctx.logits(-1), tail[0])
        pos = len(head)
        for start in range(1, len(scored), cfg.n_batch):
            chunk = scored[start:start + cfg.n_batch]
            batch = self._batch
            batch.clear()
            batch.add_sequence(chunk, pos, 0, "all")
            ctx.decode(batch)
            self._cached.extend(chunk)
            for i in range(len(chunk)):
                total += _log_softmax_at(ctx.logits(i), tail[start + i])
            pos += len(chunk)
        return total

    # -- generation --------------------------------------------------------------------
    def __call__(self, prompt: str, config: GenerationConfig | None = None, stream: bool = False,
                 on_token: OnToken | None = None, **overrides: Any) -> str | Iterator[str]:
        """Complete ``prompt``: the text, or an iterator of text chunks with ``stream=True``.

        ``config`` replaces the instance's settings for this call; keywords override single fields.
        ``on_token`` is called with each piece of text as it is generated.
        """
        gen = self.stream(prompt, config, on_token=on_token, **overrides)
        return gen if stream else "".join(gen)

    def generate(self, prompt: str, config: GenerationConfig | None = None, **overrides: Any) -> str:
        """The completion of ``prompt`` as one string."""
        return self.generate_with_stats(prompt, config, **overrides)[0]

    def generate_with_stats(self, prompt: str, config: GenerationConfig | None = None,
                            **overrides: Any) -> tuple[str, GenerationStats]:
        stats = GenerationStats()
        text = "".join(self._start(prompt, config, overrides, stats, parse_special=None))
        return text, stats

    def stream(self, prompt: str, config: GenerationConfig | None = None, on_token: OnToken | None = None,
               **overrides: Any) -> Iterator[str]:
        """Text chunks as they are generated; never splits a character or leaks a stop sequence.

        Breaking out of the loop stops generation and leaves the cache consistent.
        """
        return self._start(prompt, config, overrides, GenerationStats(), parse_special=None, on_token=on_token)

    def chat(self, messages: Sequence[Message], config: GenerationConfig | None = None, stream: bool = False,
             on_token: OnToken | None = None, tools: Sequence[Any] | None = None, tool_choice: Any = "auto",
             **overrides: Any) -> str | Iterator[str] | dict[str, Any] | Iterator[dict[str, Any]]:
        """The assistant's reply to ``messages`` (rendered with the chat template).

        With ``tools`` (OpenAI tool dicts or Python functions) the reply is an OpenAI assistant
        message dict (``tool_calls`` when the model calls), or its deltas with ``stream=True``;
        ``tool_choice`` is "auto", "required", "none" or a tool name (see llamapy.agent).
        """
        if tools:
            from ..agent.chat import chat_with_tools

            return chat_with_tools(self, messages, tools, tool_choice, stream=stream, config=config,
                                   on_token=on_token, **overrides)
        gen = self._chat(messages, config, overrides, GenerationStats(), on_token)
        return gen if stream else "".join(gen)

    def chat_with_stats(self, messages: Sequence[Message], config: GenerationConfig | None = None,
                        **overrides: Any) -> tuple[str, GenerationStats]:
        stats = GenerationStats()
        return "".join(self._chat(messages, config, overrides, stats)), stats

    def _chat(self, messages: Sequence[Message], config: GenerationConfig | None, overrides: dict,
              stats: GenerationStats, on_token: OnToken | None = None) -> Iterator[str]:
        tools = overrides.pop("tools", None)
        media: list = []
        if any(isinstance(m, Mapping) and isinstance(m.get("content"), (list, tuple)) for m in messages):
            from ..mtmd.media import flatten_messages  # content parts: text, image_url, input_audio, ...

            marker = self.mtmd.marker if self.mtmd is not None else "<__media__>"
            messages, media = flatten_messages(messages, marker)
        prompt = self.template.render(messages, add_generation_prompt=True, tools=tools)
        if media:
            overrides = {**overrides, "media": media}
        return self._start(prompt, config, overrides, stats, parse_special=True, on_token=on_token)

    def _start(self, prompt: str, config: GenerationConfig | None, overrides: dict, stats: GenerationStats,
               parse_special: bool | None, on_token: OnToken | None = None) -> Iterator[str]:
        media = overrides.pop("media", None)  # images/audio for the prompt's media markers
        cfg = config or self.config
        cfg = cfg.replace(**overrides) if overrides else cfg
        cfg.validate()
        if parse_special is not None:
            cfg = cfg.replace(parse_special=parse_special)
        if self._active is not None:  # an abandoned stream: finish it so the cache is consistent
            self._active.close()
        ctx = self._context(cfg)
        tokens = self._media_prompt(prompt, media, cfg) if media else self.tokenize(prompt, cfg)
        if not tokens:
            raise ValueError("the prompt is empty (no tokens): give some text, or set add_bos=True")
        if len(tokens) >= ctx.n_ctx:
            raise PromptTooLongError(f"the prompt has {len(tokens)} tokens but the context holds {ctx.n_ctx}: "
                                     f"shorten it or raise n_ctx (the model was trained on {self.model.n_ctx_train})")
        sampler = cfg.sampler(self.model)  # a bad grammar or schema fails here, before any decode
        gen = self._run(ctx, tokens, cfg, sampler, stats, on_token)
        self._active = gen
        return gen

    def _media_prompt(self, prompt: str, media: Sequence[Any], cfg: GenerationConfig) -> Any:
        if self.mtmd is None:
            from ..mtmd.errors import NoProjectorError

            raise NoProjectorError(f"the prompt holds {len(media)} image/audio item(s) but no projector is loaded: "
                                   f"LLM(model, mmproj='mmproj.gguf')")
        from ..mtmd.prompt import MediaPrompt

        return MediaPrompt(self.mtmd, prompt, media, add_special=cfg.bos is not False,
                           parse_special=cfg.parse_special)

    def _prefill_media(self, ctx: Context, prompt: Any, cfg: GenerationConfig, stats: GenerationStats) -> None:
        keys = prompt.keys  # one per position: token ids, media content hashes
        keep = _common_prefix(self._cached, keys)
        if keep == len(keys):
            keep -= 1
        keep = prompt.resume_point(keep)
        if not _can_resume(ctx, 0, keep):
            keep = 0
        if not ctx.memory.seq_rm(0, keep, -1):
            ctx.memory.clear()
            keep = 0
        del self._cached[keep:]

        def decode_text(tokens: list[int], pos0: int, last: bool) -> None:
            for start in range(0, len(tokens), cfg.n_batch):
                chunk = tokens[start:start + cfg.n_batch]
                self._batch.clear()
                self._batch.add_sequence(chunk, pos0 + start, 0,
                                         "last" if last and start + len(chunk) == len(tokens) else "none")
                ctx.decode(self._batch)

        try:
            decoded = prompt.decode(ctx, keep, 0, cfg.n_batch, decode_text)
        except BaseException:
            ctx.memory.seq_rm(0, keep, -1)
            raise
        self._cached.extend(keys[keep:])
        stats.prompt_tokens = len(prompt)
        stats.prompt_tokens_decoded = decoded

    def _prefill(self, ctx: Context, tokens: list[int], cfg: GenerationConfig, stats: GenerationStats) -> None:
        if not isinstance(tokens, list):
            return self._prefill_media(ctx, tokens, cfg, stats)
        keep = _common_prefix(self._cached, tokens)
        if keep == len(tokens):
            keep -= 1  # the last prompt token must be decoded again to get its logits
        if not _can_resume(ctx, 0, keep):
            keep = 0  # the sliding window has moved past the common prefix
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
            spec = self._spec if self._spec is not None and self._spec.applies(cfg) and isinstance(tokens, list) \
                else None
            if spec is not None:
                spec.begin(ctx, self._cached, cfg)
            stats.prompt_seconds = time.perf_counter() - t0
            out = TokenStream(self.vocab, cfg, stats, t0)
            if spec is not None:  # the same stream, with several tokens per decode when drafts hit
                shift = self._shift if cfg.context_shift and ctx.memory.can_shift else None
                for text in spec.run(ctx, self._cached, cfg, sampler, out, shift):
                    if on_token is not None:
                        on_token(text)
                    yield text
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
                    if on_token is not None:
                        on_token(text)
                    yield text
            tail = out.tail()
            if tail:
                if on_token is not None:
                    on_token(tail)
                yield tail
        finally:
            stats.generation_seconds = time.perf_counter() - t0 - stats.prompt_seconds
            self._active = None


class TokenStream:
    """Turns the tokens of one generation into text: never splits a character, holds back
    possible stop sequences, ends on end-of-generation tokens, stop sequences or max_tokens,
    and keeps the statistics. Shared by LLM and the batch generator."""

    def __init__(self, vocab: Any, cfg: GenerationConfig, stats: GenerationStats, t0: float | None = None):
        self.vocab = vocab
        self.cfg = cfg
        self.stats = stats
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
        stats.tokens.append(tok)
        piece = self.decoder.feed(tok)
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


def _log_sum_exp(logits: np.ndarray) -> float:
    m = float(logits.max())
    return m + math.log(np.exp(logits - m).sum())


def _log_softmax_at(logits: np.ndarray, tok: int) -> float:
    logits = logits.astype(np.float64)
    return float(logits[tok]) - _log_sum_exp(logits)


def _logprob(vocab: Any, ctx: Context, idx: int, tok: int, top_n: int) -> TokenLogprob:
    logits = ctx.logits(idx).astype(np.float64)
    lse = _log_sum_exp(logits)
    top = np.argsort(-logits)[:top_n] if top_n else []
    return TokenLogprob(tok, vocab.token_to_piece(tok), float(logits[tok] - lse),
                        [(int(t), vocab.token_to_piece(int(t)), float(logits[t] - lse)) for t in top])


def complete(prompt: str, model_path: str | os.PathLike | None = None, config: GenerationConfig | None = None,
             stream: bool = False, **settings: Any) -> str | Iterator[str]:
    """Load a model, complete ``prompt``, free the model. (Use :class:`LLM` to keep it loaded.)"""
    return _one_shot(model_path, config, settings, lambda llm: llm.stream(prompt), stream)


def chat(messages: Sequence[Mapping[str, Any]], model_path: str | os.PathLike | None = None,
         config: GenerationConfig | None = None, stream: bool = False, **settings: Any) -> str | Iterator[str]:
    """Load a model, answer ``messages`` with its chat template, free the model."""
    return _one_shot(model_path, config, settings, lambda llm: llm.chat(messages, stream=True), stream)


def _one_shot(model_path: str | os.PathLike | None, config: GenerationConfig | None, settings: dict,
              run: Callable[[LLM], Iterator[str]], stream: bool) -> str | Iterator[str]:
    llm = LLM(model_path, config, **settings)  # loads now: a missing file fails here, not on first next()

    def chunks() -> Iterator[str]:
        with llm:
            yield from run(llm)

    return chunks() if stream else "".join(chunks())


# The names other bindings use for the same things.
Generator = LLM
generate = complete

__all__ = ["LLM", "TokenStream", "complete", "chat", "Generator", "generate"]

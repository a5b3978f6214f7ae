"""Continuous batching: many requests share one context and one decode call per step.

Up to ``n_seq_max`` requests run at once, each in its own sequence with its own sampler,
stop sequences and limits. A finished request frees its sequence (its KV cells are
removed) and a waiting one takes it in the same loop. Prompts are prefilled in chunks that
share each decode with the running sequences, so a long prompt does not stall the
others, and a prompt prefix already in the cache for another request is copied
(``seq_cp``) instead of decoded again. A finished request's cells stay in its sequence until
the sequence is needed again: a new request goes to the free sequence whose cache shares
the longest prefix with its prompt (a chat's next turn finds its previous turn there) and
decodes only the rest. Requests may be submitted from any thread.
"""
from __future__ import annotations

import collections
import itertools
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

from .._ffi import set_verbose
from ..batch import Batch
from ..hub.catalog import DEFAULT_MODEL, pull
from .config import GenerationConfig, GenerationStats, TokenLogprob
from ..context import Context
from ..errors import LlamaError, NoKvSlotError, PromptTooLongError
from .batch_speculation import SlotSpeculation
from .speculative import DraftModelDrafter, NgramDrafter, VocabMismatchError, check_compatible
from .llm import TokenStream, _can_resume, _common_prefix
from ..model import Model

MIN_SHARED_PREFIX = 8  # shorter common prefixes are cheaper to decode than to copy


@dataclass
class BatchRequest:
    """One prompt and its own settings (None: the generator's defaults)."""

    id: Any
    prompt: str
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    stop_sequences: Sequence[str] | None = None
    grammar: str | None = None
    json_schema: dict | None = None
    config: GenerationConfig | None = None
    on_event: Callable[[BatchEvent], None] | None = None  # called in the generator's thread with each event
    media: Sequence[Any] | None = None  # images/audio for the prompt's media markers (needs mmproj=)

    def settings(self, base: GenerationConfig) -> GenerationConfig:
        cfg = self.config or base
        overrides = {k: v for k, v in (("max_tokens", self.max_tokens), ("temperature", self.temperature),
                                       ("seed", self.seed), ("stop_sequences", self.stop_sequences),
                                       ("grammar", self.grammar), ("json_schema", self.json_schema))
                     if v is not None}
        cfg = cfg.replace(**overrides) if overrides else cfg
        cfg.validate()
        return cfg


@dataclass
class BatchEvent:
    """A piece of one request's output; the last event of a request has done=True."""

    id: Any
    text: str
    done: bool = False
    stats: GenerationStats | None = None
    error: Exception | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)  # of the tokens behind this text (if asked)


@dataclass
class BatchResponse:
    """The whole result of one request."""

    id: Any
    prompt: str
    response: str
    tokens_generated: int
    time_taken: float
    finish_reason: str
    stats: GenerationStats = field(default_factory=GenerationStats)
    error: Exception | None = None


@dataclass
class _Slot:
    seq: int
    request: BatchRequest
    cfg: GenerationConfig
    sampler: Any
    tokens: list[int]  # the prompt, then each generated token once it is decoded
    n_past: int  # tokens of this sequence in the KV cache
    out: TokenStream
    future: Future
    started: float
    text: list[str] = field(default_factory=list)
    last: int | None = None  # sampled, not yet decoded
    logit_index: int = -1  # row of this slot's logits in the last decode
    pending: int = 0  # prompt tokens in the batch being decoded
    share: tuple[_Slot, int] | None = None  # (source, prefix length) to copy once the source has it
    logprobs_sent: int = 0  # stats.logprobs already attached to events
    media: Any = None  # the MediaPrompt of a prompt with images/audio (tokens are then its position keys)
    error: Exception | None = None
    spec: SlotSpeculation | None = None  # n-gram speculation (speculative="ngram")

    @property
    def prefilling(self) -> bool:
        return self.n_past < len(self.tokens)


class BatchGenerator:
    """A model and one context serving many requests at once (continuous batching).

    ``n_ctx`` is the context window of each request: the shared KV cache holds
    n_ctx x ``n_seq_max`` tokens, one stream per sequence. ``batch_size`` is the most tokens
    one decode call takes (prompt chunks and the running sequences' next tokens together).
    ``rpc_servers`` and ``tensor_split`` place layers on RPC servers as in :class:`LLM`.
    ``speculative="ngram"`` drafts up to ``n_draft`` tokens per sequence and step from each
    request's own text; ``draft_model=`` (a smaller model with the same vocabulary) drafts with a
    context of its own per sequence. Same output, fewer steps when the drafts hit.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, batch_size: int = 512, n_ctx: int = 2048,
                 n_gpu_layers: int | None = 99, verbose: bool = False, *, n_seq_max: int = 8,
                 n_batch: int | None = None, n_threads: int | None = None, config: GenerationConfig | None = None,
                 mmproj: str | os.PathLike | None = None,
                 rpc_servers: str | Sequence[str] | None = None, tensor_split: Sequence[float] | None = None,
                 speculative: str | None = None, draft_model: str | os.PathLike | Model | None = None,
                 n_draft: int | None = None, **settings: Any):
        self._n_draft = draft_length(speculative, n_draft, draft_model)
        self.config = (config or GenerationConfig()).replace(**({"n_gpu_layers": n_gpu_layers} | settings))
        self.config.validate()
        if verbose:
            set_verbose(True)
        n_batch = n_batch or batch_size
        path = model_path if model_path is not None else pull(DEFAULT_MODEL, quiet=True)
        load = {} if self.config.n_gpu_layers is None else {"n_gpu_layers": self.config.n_gpu_layers}
        self.model = Model.from_file(path, rpc_servers=rpc_servers, tensor_split=tensor_split, **load)
        self.vocab = self.model.vocab
        # One KV stream per sequence: each sequence's attention is computed exactly as if it ran
        # alone, so greedy output matches single-sequence generation token for token.
        self.ctx = Context(self.model, n_ctx=n_ctx * n_seq_max, n_batch=n_batch, n_seq_max=n_seq_max,
                           n_threads=n_threads, kv_unified=False)
        self.n_batch = self.ctx.n_batch
        self.n_ctx_seq = self.ctx.n_ctx_seq
        self._batch = Batch(self.n_batch, n_seq_max=n_seq_max)
        self.mtmd = None  # the projector for images/audio in prompts (mmproj=...)
        if mmproj is not None:
            from ..mtmd import MtmdContext

            self.mtmd = MtmdContext(mmproj, self.model, n_threads=n_threads)
        self._draft_model: Model | None = None
        self._own_draft_model = False
        self._specs: dict[int, SlotSpeculation] = {}  # per sequence, kept across requests
        self._free = list(range(n_seq_max))  # least recently used first
        self._kept: dict[int, list[int]] = {}  # tokens a free sequence still holds in the cache
        self._slots: dict[int, _Slot] = {}
        self._waiting: collections.deque[tuple[BatchRequest, Future]] = collections.deque()
        self._cancelled: set[Any] = set()
        self._cond = threading.Condition()
        self._loop_lock = threading.Lock()
        self._listeners: list[collections.deque] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._ids = itertools.count()
        if draft_model is not None:
            self._open_draft_model(draft_model, n_gpu_layers)

    # -- submission (any thread) ----------------------------------------------------------
    def submit(self, request: BatchRequest | str) -> Future:
        """Queue a request; the Future resolves to its BatchResponse."""
        if isinstance(request, str):
            request = BatchRequest(next(self._ids), request)
        future: Future = Future()
        with self._cond:
            self._waiting.append((request, future))
            self._cond.notify_all()
        return future

    def cancel(self, request_id: Any) -> None:
        """Stop a request (waiting or running); the others are not disturbed."""
        with self._cond:
            self._cancelled.add(request_id)
            self._cond.notify_all()

    @property
    def n_running(self) -> int:
        """Requests holding a sequence (reading their prompt or generating)."""
        return len(self._slots)

    @property
    def n_waiting(self) -> int:
        """Requests queued for a free sequence."""
        return len(self._waiting)

    # -- running -------------------------------------------------------------------------
    def generate_batch(self, prompts: Iterable[str | BatchRequest], config: GenerationConfig | None = None,
                       **settings: Any) -> list[str]:
        """Run every prompt to completion; the texts, in the order of the prompts."""
        return [r.response for r in self.generate_responses(prompts, config, **settings)]

    def generate_responses(self, prompts: Iterable[str | BatchRequest], config: GenerationConfig | None = None,
                           **settings: Any) -> list[BatchResponse]:
        """Run every prompt to completion; full responses (text, token count, time, stats, error)
        in the order of the prompts."""
        requests = [p if isinstance(p, BatchRequest) else BatchRequest(i, p) for i, p in enumerate(prompts)]
        if config is not None or settings:
            base = (config or self.config).replace(**settings)
            requests = [r if r.config else _with_config(r, base) for r in requests]
        futures = [self.submit(r) for r in requests]
        self._run_until(futures)
        return [f.result() for f in futures]

    def stream(self, requests: Iterable[str | BatchRequest]) -> Iterator[BatchEvent]:
        """Submit requests and yield their events (text chunks, then done) as they happen."""
        events: collections.deque[BatchEvent] = collections.deque()
        with self._cond:
            self._listeners.append(events)
        try:
            futures = [self.submit(r if isinstance(r, BatchRequest) else BatchRequest(i, r))
                       for i, r in enumerate(requests)]
            while True:
                while events:
                    yield events.popleft()
                if all(f.done() for f in futures) and not events:
                    return
                if self._thread is not None:
                    with self._cond:
                        self._cond.wait(0.05)
                else:
                    self._step()
        finally:
            with self._cond:
                self._listeners.remove(events)

    def start(self) -> None:
        """Run the loop in a background thread (then submit() from anywhere)."""
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._serve, name="llamapy-batch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        self.stop()
        for spec in self._specs.values():
            spec.close()
        if self._draft_model is not None and self._own_draft_model:
            self._draft_model.close()
        self.ctx.close()
        if self.mtmd is not None:
            self.mtmd.close()
        self.model.close()

    def __enter__(self) -> BatchGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._waiting and not self._slots:
                    self._cond.wait()
                if self._stopping:
                    return
            self._step()

    def _run_until(self, futures: list[Future]) -> None:
        if self._thread is not None:
            for f in futures:
                f.result()
            return
        while not all(f.done() for f in futures):
            self._step()

    # -- one step of the loop --------------------------------------------------------------
    def _step(self) -> None:
        with self._loop_lock:
            self._apply_cancellations()
            self._admit()
            if not self._slots:
                return
            batch = self._fill_batch()
            if len(batch) == 0:
                return
            try:
                self.ctx.decode(batch)
            except NoKvSlotError:  # nothing of this batch stayed in the cache
                for slot in self._slots.values():
                    slot.pending, slot.logit_index = 0, -1
                self._evict_longest()
                return
            self._after_decode()

    def _emit(self, request: BatchRequest, event: BatchEvent) -> None:
        if request.on_event is not None:
            request.on_event(event)
        with self._cond:
            for listener in self._listeners:
                listener.append(event)
            self._cond.notify_all()

    def _apply_cancellations(self) -> None:
        with self._cond:
            cancelled, self._cancelled = self._cancelled, set()
            keep = collections.deque()
            for request, future in self._waiting:
                if request.id in cancelled:
                    self._finish_unstarted(request, future, "cancelled")
                else:
                    keep.append((request, future))
            self._waiting = keep
        for slot in list(self._slots.values()):
            if slot.request.id in cancelled:
                slot.out.finish_with("cancelled")
                self._release(slot)

    def _finish_unstarted(self, request: BatchRequest, future: Future, reason: str,
                          error: Exception | None = None) -> None:
        stats = GenerationStats(finish_reason=reason)
        response = BatchResponse(request.id, request.prompt, "", 0, 0.0, reason, stats, error)
        future.set_result(response)
        self._emit(request, BatchEvent(request.id, "", True, stats, error))

    def _admit(self) -> None:
        while self._free:
            with self._cond:
                if not self._waiting:
                    return
                request, future = self._waiting.popleft()
            try:
                cfg = request.settings(self.config)
                media = self._media_prompt(request, cfg) if request.media else None
                tokens = list(media.keys) if media is not None else self._tokenize(request.prompt, cfg)
                n_cells = len(media) if media is not None else len(tokens)
                if n_cells >= self.n_ctx_seq:
                    raise PromptTooLongError(f"the prompt has {n_cells} tokens but each sequence holds "
                                             f"{self.n_ctx_seq} (n_ctx / n_seq_max)")
                sampler = cfg.sampler(self.model)
            except (LlamaError, ValueError) as e:
                self._finish_unstarted(request, future, "error", e)
                continue
            seq, reused = self._take_free_seq(tokens)
            stats = GenerationStats(prompt_tokens=len(tokens))
            now = time.perf_counter()
            slot = _Slot(seq, request, cfg, sampler, tokens, reused, TokenStream(self.vocab, cfg, stats, t0=now),
                         future, now, media=media)
            stats.prompt_tokens_decoded = len(tokens) - reused
            if self._n_draft and media is None and cfg.mirostat == 0:
                slot.spec = self._speculation(seq)
                slot.spec.start(self.ctx, tokens, cfg, sampler)
            self._share_prefix(slot)
            self._slots[seq] = slot

    def _open_draft_model(self, draft_model: str | os.PathLike | Model, n_gpu_layers: int | None) -> None:
        if isinstance(draft_model, Model):
            dm = draft_model
        else:
            dm = Model.from_file(draft_model, **({} if n_gpu_layers is None else {"n_gpu_layers": n_gpu_layers}))
            self._own_draft_model = True
        self._draft_model = dm
        try:
            check_compatible(self.model, dm)
        except VocabMismatchError:
            self.close()
            raise

    def _speculation(self, seq: int) -> SlotSpeculation:
        """Sequence ``seq``'s drafter and policy (made on first use)."""
        spec = self._specs.get(seq)
        if spec is None:
            if self._draft_model is not None:
                ctx = Context(self._draft_model, n_ctx=self.n_ctx_seq, n_batch=min(self.n_batch, self.n_ctx_seq),
                              n_threads=self.ctx.n_threads, n_threads_batch=self.ctx.n_threads_batch)
                drafter: Any = DraftModelDrafter(self._draft_model, ctx)
            else:
                drafter = NgramDrafter()
            spec = self._specs[seq] = SlotSpeculation(drafter, self._n_draft)
        return spec

    def _media_prompt(self, request: BatchRequest, cfg: GenerationConfig) -> Any:
        from ..mtmd.errors import NoProjectorError
        from ..mtmd.prompt import MediaPrompt

        if self.mtmd is None:
            raise NoProjectorError("the request holds images/audio but no projector is loaded: "
                                   "BatchGenerator(model, mmproj='mmproj.gguf')")
        prompt = MediaPrompt(self.mtmd, request.prompt, request.media, add_special=cfg.bos is not False,
                             parse_special=cfg.parse_special)
        if not prompt.ends_with_text:
            raise ValueError("a batched prompt must end with text after its last image or audio item")
        return prompt

    def _media_text(self, slot: _Slot, room: int) -> list[int]:
        """Decode (through libmtmd) the media items next in ``slot``'s prompt, then give the
        text tokens up to the next media item (at most ``room``)."""
        from ..mtmd.chunks import ChunkType

        prompt = slot.media
        while slot.prefilling:
            first, n, chunk = prompt.span_at(slot.n_past)
            if chunk.type == ChunkType.TEXT:
                return slot.tokens[slot.n_past:min(first + n, slot.n_past + room)]
            if slot.n_past != first:  # a reused prefix ended inside the item: redo it whole
                self.ctx.memory.seq_rm(slot.seq, first, -1)
            self.mtmd.eval(self.ctx, chunk, n_past=first, seq_id=slot.seq, n_batch=self.n_batch, logits_last=False)
            slot.n_past = first + n
        return []

    def _tokenize(self, prompt: str, cfg: GenerationConfig) -> list[int]:
        tokens = self.vocab.tokenize_prompt(prompt, cfg.bos, cfg.parse_special)
        if not tokens:
            raise ValueError("the prompt is empty")
        return tokens

    def _take_free_seq(self, tokens: list[int]) -> tuple[int, int]:
        """The free sequence whose cache shares the longest prefix with ``tokens`` (at least
        MIN_SHARED_PREFIX), else the one free the longest; its cache is cut back to what is
        reused. Returns (sequence, tokens reused)."""
        seq, best = self._free[0], 0
        for candidate in self._free:
            n = min(_common_prefix(self._kept.get(candidate, ()), tokens), len(tokens) - 1)
            if n > best and n >= MIN_SHARED_PREFIX and _can_resume(self.ctx, candidate, n):
                seq, best = candidate, n
        self._free.remove(seq)
        if self._kept.pop(seq, None) and not self.ctx.memory.seq_rm(seq, best, -1):
            self.ctx.memory.seq_rm(seq)  # a cache that cannot be cut (recurrent) starts over
            best = 0
        return seq, best

    def _share_prefix(self, slot: _Slot) -> None:
        """Plan to copy the longest prompt prefix another request has (or is about to have) in
        the cache, instead of decoding it again."""
        best, source = slot.n_past, None
        for other in self._slots.values():
            n = min(_common_prefix(other.tokens, slot.tokens), len(slot.tokens) - 1)
            if n > best:
                best, source = n, other
        if source is not None and best >= MIN_SHARED_PREFIX:
            slot.share = (source, best)

    def _take_shared_prefix(self, slot: _Slot) -> bool:
        """Copy the planned prefix if the source has decoded it; False while it has not yet."""
        assert slot.share is not None
        source, n = slot.share
        if self._slots.get(source.seq) is not source:  # the source went away: decode it all
            slot.share = None
            return True
        if source.n_past < n:
            return False
        if not _can_resume(self.ctx, source.seq, n):  # its sliding window has moved past the prefix
            slot.share = None
            return True
        memory = self.ctx.memory
        memory.seq_cp(source.seq, slot.seq)  # sequences live in separate streams: copy whole,
        memory.seq_rm(slot.seq, n, -1)  # then cut back to the shared prefix
        slot.n_past = n
        slot.share = None
        slot.out.stats.prompt_tokens_decoded = len(slot.tokens) - n
        return True

    def _fill_batch(self) -> Batch:
        batch = self._batch
        batch.clear()
        # Tokens go in sequence order: llama.cpp splits a batch whose sequences come out of
        # order into more micro-batches, which costs a whole extra pass.
        if list(self._slots) != sorted(self._slots):
            self._slots = dict(sorted(self._slots.items()))
        generating = [s for s in self._slots.values() if not s.prefilling and s.last is not None]
        spare = (self.n_batch - len(generating)) // max(1, len(generating))  # room for drafts, per sequence
        for slot in generating:  # one token for every generating sequence first (and its draft)
            slot.logit_index = len(batch)
            batch.add(slot.last, slot.n_past, slot.seq, logits=True)
            if slot.spec is not None:
                stats = slot.out.stats
                room = min(spare, self.n_ctx_seq - slot.n_past - 2, slot.cfg.max_tokens - stats.completion_tokens - 1)
                for i, tok in enumerate(slot.spec.propose(slot.tokens, slot.last, max(0, room))):
                    batch.add(tok, slot.n_past + 1 + i, slot.seq, logits=True)
        for slot in list(self._slots.values()):  # then prompt chunks in the room that is left
            room = self.n_batch - len(batch)
            if room <= 0:
                break
            if slot.share is not None and not self._take_shared_prefix(slot):
                continue
            if slot.prefilling and slot.media is not None:
                try:
                    chunk = self._media_text(slot, room)
                except LlamaError as e:  # this request fails; the others go on
                    slot.error = e
                    slot.out.finish_with("error")
                    self._release(slot)
                    continue
            elif slot.prefilling:
                chunk = slot.tokens[slot.n_past: slot.n_past + room]
            if slot.prefilling:
                ends = slot.n_past + len(chunk) == len(slot.tokens)
                batch.add_sequence(chunk, slot.n_past, slot.seq, "last" if ends else "none")
                slot.logit_index = len(batch) - 1 if ends else -1
                slot.pending = len(chunk)
        return batch

    def _after_decode(self) -> None:
        for slot in list(self._slots.values()):
            if slot.pending:
                slot.n_past += slot.pending
                slot.pending = 0
                if not slot.prefilling:
                    slot.out.stats.prompt_seconds = time.perf_counter() - slot.started
            if slot.logit_index < 0:
                continue
            if slot.last is not None:
                slot.n_past += 1
                slot.tokens.append(slot.last)
            index, slot.logit_index = slot.logit_index, -1
            if slot.spec is not None:
                self._verify(slot, index)
            else:
                slot.last = slot.sampler.sample(self.ctx, index)
                self._push(slot, index, slot.last)
            if not slot.out.done and slot.n_past + 1 >= self.n_ctx_seq:
                slot.out.finish_with("length")
            if slot.out.done:
                self._release(slot)

    def _push(self, slot: _Slot, index: int, tok: int) -> None:
        """Add the token chosen from output ``index`` to the slot's reply (and send its text)."""
        text = slot.out.push(self.ctx, index, tok)
        if text:
            slot.text.append(text)
            self._emit(slot.request, BatchEvent(slot.request.id, text, logprobs=self._new_logprobs(slot)))

    def _verify(self, slot: _Slot, index: int) -> None:
        """Choose the target's tokens along the slot's draft (outputs ``index``...) and keep the
        draft up to the first disagreement; the rest leaves the cache."""
        spec, stats = slot.spec, slot.out.stats
        drafts = spec.draft.tokens
        n_acc = 0
        for j in range(len(drafts) + 1):
            tok = spec.choose(slot.sampler, self.ctx, index + j, stats.completion_tokens, j)
            self._push(slot, index + j, tok)
            hit = j < len(drafts) and tok == drafts[j]
            n_acc += hit
            if hit and not slot.out.done:  # already decoded: the draft goes on
                slot.n_past += 1
                slot.tokens.append(tok)
                continue
            slot.last = tok
            break
        stats.drafted += len(drafts)
        stats.accepted += n_acc
        spec.record(n_acc)
        if drafts:  # what was decoded past the kept text leaves the cache
            self.ctx.memory.seq_rm(slot.seq, slot.n_past, -1)

    def _evict_longest(self) -> None:
        """The cache is full: end the request holding the most cells ("length")."""
        victim = max(self._slots.values(), key=lambda s: s.n_past)
        victim.out.finish_with("length")
        victim.last = None
        self._release(victim)

    def _release(self, slot: _Slot) -> None:
        tail = slot.out.tail() if slot.out.stats.finish_reason != "cancelled" else ""
        if tail:
            slot.text.append(tail)
            self._emit(slot.request, BatchEvent(slot.request.id, tail, logprobs=self._new_logprobs(slot)))
        for other in self._slots.values():  # hand over the prefix before the cells go
            if other.share is not None and other.share[0] is slot:
                self._take_shared_prefix(other)
        self._kept[slot.seq] = slot.tokens[:slot.n_past]  # the cells stay for a next turn
        del self._slots[slot.seq]
        self._free.append(slot.seq)
        stats = slot.out.stats
        elapsed = time.perf_counter() - slot.started
        stats.generation_seconds = elapsed - stats.prompt_seconds
        response = BatchResponse(slot.request.id, slot.request.prompt, "".join(slot.text), stats.completion_tokens,
                                 elapsed, stats.finish_reason, stats, slot.error)
        slot.future.set_result(response)
        self._emit(slot.request, BatchEvent(slot.request.id, "", True, stats, logprobs=self._new_logprobs(slot)))

    @staticmethod
    def _new_logprobs(slot: _Slot) -> list[TokenLogprob]:
        """The log-probabilities not yet attached to an event (empty unless the request asked)."""
        logprobs = slot.out.stats.logprobs
        if len(logprobs) == slot.logprobs_sent:
            return []
        new, slot.logprobs_sent = logprobs[slot.logprobs_sent:], len(logprobs)
        return new


def draft_length(speculative: str | None, n_draft: int | None, draft_model: Any = None) -> int:
    """Most tokens drafted per sequence and step (0: no speculation), after checking the settings."""
    if speculative is None and draft_model is None:
        if n_draft is not None:
            raise ValueError("n_draft needs speculative decoding: give draft_model= or speculative='ngram'")
        return 0
    if speculative not in (None, "ngram", "draft"):
        raise ValueError(f"speculative must be 'ngram' or 'draft', got {speculative!r}")
    if speculative == "ngram" and draft_model is not None:
        raise ValueError("draft_model= is for draft-model speculation; leave speculative unset (or 'draft')")
    if speculative == "draft" and draft_model is None:
        raise ValueError("speculative='draft' needs draft_model= (a GGUF file of a smaller model)")
    if n_draft is not None and n_draft < 1:
        raise ValueError("n_draft must be >= 1")
    return n_draft or (16 if speculative == "ngram" else 8)


def _with_config(request: BatchRequest, config: GenerationConfig) -> BatchRequest:
    request.config = config
    return request


def batch_generate(prompts: Sequence[str], model_path: str | os.PathLike | None = None,
                   config: GenerationConfig | None = None, *, n_seq_max: int = 16, n_ctx: int = 2048,
                   **settings: Any) -> list[str]:
    """Generate for every prompt at once (continuous batching); the texts, in order."""
    with BatchGenerator(model_path, n_ctx=n_ctx, n_seq_max=min(n_seq_max, max(1, len(prompts))), config=config,
                        **settings) as gen:
        return gen.generate_batch(prompts)


__all__ = ["BatchGenerator", "BatchRequest", "BatchEvent", "BatchResponse", "batch_generate"]

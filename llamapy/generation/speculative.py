"""Speculative decoding: a cheap drafter proposes tokens, the target model checks them in one batch.

Greedy verification keeps the longest draft prefix the target would have produced itself, so
the output is token for token that of plain decoding, up to rounding: llama.cpp's CPU kernels
round a batch of several tokens slightly differently from a single token, so where two tokens
are within that rounding of each other the verified batch may pick the other one (as in
llama.cpp's own speculative decoding). At temperature > 0, speculative sampling
(accept a drafted token with probability min(1, p/q), otherwise draw from the normalised
residual max(0, p - q)) keeps the target's distribution exactly. Drafters: a smaller model with
the same vocabulary (:class:`DraftModelDrafter`, :class:`Speculative`), or n-gram lookup in the
text so far (:class:`NgramDrafter`). :class:`DraftLengthPolicy` sizes each draft from measured
acceptance and costs, and falls back to plain decoding when speculation does not pay.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from .._ffi import ffi, lib
from ..batch import Batch
from ..context import Context
from ..errors import LlamaError
from ..model import Model
from ..sampler import TOKEN_DATA, Sampler, SamplerChain
from .ngram_cache import NGRAM_MAX, NgramCache, check_ngram_sizes
from .prompt_lookup import PromptLookup

if TYPE_CHECKING:
    from .config import GenerationConfig
    from .llm import TokenStream

VOCAB_MAX_SIZE_DIFFERENCE = 128  # vocabularies may differ by this many (padding) tokens, as in llama.cpp
VOCAB_CHECK_START = 5  # token texts are compared from this id on (the first ids are often special tokens)


class VocabMismatchError(LlamaError, ValueError):
    """The draft model's vocabulary does not match the target's, so its tokens mean something else."""


@dataclass
class SpeculativeParams:
    """How to draft: at most ``n_draft`` tokens, while the draft model gives its choice at least
    ``p_min``; a draft context window that moved keeps its cache when ``n_reuse`` tokens still match."""

    n_draft: int = 16
    n_reuse: int = 8
    p_min: float = 0.75

    def validate(self) -> None:
        if self.n_draft < 0 or self.n_reuse < 0:
            raise ValueError("n_draft and n_reuse must be >= 0")
        if not 0.0 <= self.p_min <= 1.0:
            raise ValueError("p_min is a probability: 0 <= p_min <= 1")


# -- compatibility -----------------------------------------------------------------------
def vocab_difference(target: Model, draft: Model) -> str | None:
    """Why ``draft`` cannot draft for ``target`` (the first difference found), or None.

    The checks are llama.cpp's: vocabulary type, BOS/EOS use and ids, sizes within
    VOCAB_MAX_SIZE_DIFFERENCE, and the text of every shared token from VOCAB_CHECK_START on.
    """
    vt, vd = target.vocab, draft.vocab
    if vt.type != vd.type:
        return f"vocabulary types differ (target {vt.type.name}, draft {vd.type.name})"
    for role in ("bos", "eos"):
        add_t, add_d = getattr(vt, f"add_{role}"), getattr(vd, f"add_{role}")
        id_t, id_d = getattr(vt, role), getattr(vd, role)
        if add_t != add_d or (add_t and id_t != id_d):
            return (f"{role.upper()} handling differs (target adds {role.upper()}: {add_t}, id {id_t}; "
                    f"draft adds {role.upper()}: {add_d}, id {id_d})")
    n_t, n_d = vt.n_tokens, vd.n_tokens
    if abs(n_t - n_d) > VOCAB_MAX_SIZE_DIFFERENCE:
        return (f"vocabulary sizes differ by {abs(n_t - n_d)} tokens (target {n_t}, draft {n_d}; "
                f"at most {VOCAB_MAX_SIZE_DIFFERENCE} allowed)")
    pt, pd, text = vt._ptr, vd._ptr, lib.llama_vocab_get_text
    for i in range(VOCAB_CHECK_START, min(n_t, n_d)):
        a, b = ffi.string(text(pt, i)), ffi.string(text(pd, i))
        if a != b:
            return f"token {i} differs (target {a.decode('utf-8', 'replace')!r}, draft {b.decode('utf-8', 'replace')!r})"
    return None


def check_compatible(target: Model, draft: Model) -> None:
    """Raise VocabMismatchError naming the difference when ``draft`` cannot draft for ``target``."""
    why = vocab_difference(target, draft)
    if why is not None:
        raise VocabMismatchError(f"{draft.path.name} cannot draft for {target.path.name}: {why}")


# -- distributions and speculative sampling ------------------------------------------------
class TokenDistribution:
    """The probabilities a sampler chain (without its final draw) leaves for one output of a decode,
    as (token ids, probabilities): the distribution llama.cpp's ``dist`` sampler would draw from."""

    def __init__(self, chain: SamplerChain, n_vocab: int):
        self.chain = chain
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._cand = np.zeros(n_vocab, dtype=TOKEN_DATA)

    def __call__(self, ctx: Context, idx: int) -> tuple[np.ndarray, np.ndarray]:
        cand = self._cand
        cand["id"] = self._ids
        cand["logit"] = ctx.logits(idx)[: len(cand)]
        kept = self.chain.apply(cand)
        logits = kept["logit"].astype(np.float64)
        w = np.exp(logits - logits.max())
        return kept["id"].copy(), w / w.sum()


def draw(ids: np.ndarray, probs: np.ndarray, rng: np.random.Generator) -> int:
    """One token drawn from (ids, probs)."""
    cum = np.cumsum(probs)
    i = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
    return int(ids[min(i, len(ids) - 1)])


def speculative_sample(p_ids: np.ndarray, p: np.ndarray, token: int, q_ids: np.ndarray | None,
                       q: np.ndarray | None, rng: np.random.Generator) -> int:
    """The target's token at a drafted position: ``token`` (drawn from q) with probability
    min(1, p/q), else a draw from the residual max(0, p - q). The result is distributed as p.

    ``q_ids`` None means the token was chosen outright (q is 1 on it, as for n-gram drafts): then
    a plain draw from p is the same rule (it lands on ``token`` with probability p(token), and
    elsewhere in proportion to p), and the token does not depend on the draft at all.
    """
    if q_ids is None:
        return draw(p_ids, p, rng)
    hit = np.flatnonzero(p_ids == token)
    p_x = float(p[hit[0]]) if hit.size else 0.0
    where = np.flatnonzero(q_ids == token)
    q_x = float(q[where[0]]) if where.size else 0.0
    if q_x > 0 and rng.random() * q_x < p_x:
        return token
    order = np.argsort(q_ids)
    pos = np.clip(np.searchsorted(q_ids, p_ids, sorter=order), 0, len(q_ids) - 1)
    q_on_p = np.where(q_ids[order[pos]] == p_ids, q[order[pos]], 0.0)
    residual = np.maximum(p - q_on_p, 0.0)
    if residual.sum() <= 0:  # p == q up to rounding: the residual is empty, p itself is the answer
        return draw(p_ids, p, rng)
    return draw(p_ids, residual, rng)


# -- drafts and drafters ---------------------------------------------------------------------
@dataclass
class Draft:
    """Proposed tokens; ``dists`` holds, per token, the (ids, probs) it was drawn from (None when the
    tokens were chosen outright); ``overhead`` is time spent catching up with the text (not drafting)."""

    tokens: list[int] = field(default_factory=list)
    dists: list[tuple[np.ndarray, np.ndarray]] | None = None
    overhead: float = 0.0


class Drafter(Protocol):
    """What the speculative loop needs from a drafter."""

    def begin(self, target: Context, tokens: Sequence[int], cfg: GenerationConfig,
              rng: np.random.Generator | None) -> None:
        """A generation starts; ``tokens`` are in the target's memory."""

    def draft(self, history: Sequence[int], last: int, n_max: int) -> Draft:
        """Up to ``n_max`` tokens to follow ``history`` + [``last``]."""

    def close(self) -> None:
        """Free what the drafter owns."""


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n], dtype=np.int64) != np.asarray(b[:n], dtype=np.int64))
    return int(diff[0]) if diff.size else n


class DraftModelDrafter:
    """Drafts with a smaller model that shares the target's vocabulary.

    Its context follows the target's text (reusing its cache across calls and generations) and
    extends it one token at a time: greedily when the target samples greedily, else drawn from
    the draft's own distribution under the same sampling settings. Drafting stops early when the
    draft model's most likely token has probability below ``p_min``, and after an end-of-generation
    token. When the text outgrows the draft context, the context holds a window of the latest
    tokens, shifted rather than refilled when at least ``n_reuse`` tokens still match.
    """

    def __init__(self, model: Model, ctx: Context | None = None, p_min: float = 0.0, n_reuse: int = 8,
                 owns_model: bool = False):
        self.model = model
        self.ctx = ctx
        self._owns_ctx = ctx is None
        self._owns_model = owns_model
        self.p_min = p_min
        self.n_reuse = n_reuse
        self._cached: list[int] = []  # tokens in the draft context: history[self._offset:] (+ drafts)
        self._offset = 0
        self._greedy = Sampler.greedy()
        self._dist: TokenDistribution | None = None
        self._rng: np.random.Generator | None = None
        self._batch: Batch | None = None

    def begin(self, target: Context, tokens: Sequence[int], cfg: GenerationConfig,
              rng: np.random.Generator | None) -> None:
        if self._owns_ctx and (self.ctx is None or self.ctx.n_ctx < target.n_ctx):
            if self.ctx is not None:
                self.ctx.close()
            self.ctx = Context(self.model, n_ctx=target.n_ctx, n_batch=target.n_batch, n_threads=target.n_threads,
                               n_threads_batch=target.n_threads_batch)
            self._cached, self._offset, self._batch = [], 0, None
        if cfg.greedy:
            self._dist, self._rng = None, None
        else:
            plain = cfg.replace(grammar=None, json_schema=None, logit_bias=None, repeat_penalty=1.0,
                                presence_penalty=0.0, frequency_penalty=0.0, dry_multiplier=0.0)
            chain = plain.sampler(self.model)
            chain.remove(-1)  # the final draw is made here, to know q
            self._dist, self._rng = TokenDistribution(chain, self.model.vocab.n_tokens), rng
        if tokens:
            self._sync(tokens[:-1], tokens[-1], 0)

    def _context(self) -> Context:
        if self.ctx is None:
            raise LlamaError("the draft model has no context yet: call begin() first")
        return self.ctx

    def _sync(self, history: Sequence[int], last: int, n_max: int) -> int:
        """Make the draft context hold the window of ``history`` + [last] (decoding what it lacks,
        with logits for ``last``); return how many tokens were decoded."""
        ctx = self._context()
        mem = ctx.memory
        start = max(0, len(history) + 1 + n_max - ctx.n_ctx)
        if start != self._offset:
            delta = start - self._offset
            keep = _common_prefix(self._cached[delta:], history[start:]) if delta > 0 else 0
            if keep >= max(1, self.n_reuse) and mem.can_shift:
                mem.seq_rm(0, 0, delta)
                mem.seq_add(0, delta, -1, -delta)
                self._cached = self._cached[delta:]
            else:
                mem.seq_rm(0, -1, -1)
                self._cached = []
            self._offset = start
        window = history[start:]
        keep = _common_prefix(self._cached, window)
        if keep < len(self._cached) and not mem.seq_rm(0, keep, -1):
            mem.clear()
            keep = 0
        del self._cached[keep:]
        todo = list(window[keep:]) + [last]
        n_batch = ctx.n_batch
        if self._batch is None:
            self._batch = Batch(n_batch)
        batch = self._batch
        for s in range(0, len(todo), n_batch):
            chunk = todo[s:s + n_batch]
            batch.clear()
            batch.add_sequence(chunk, keep + s, 0, "last" if s + len(chunk) == len(todo) else "none")
            ctx.decode(batch)
        self._cached.extend(todo)
        return len(todo)

    def draft(self, history: Sequence[int], last: int, n_max: int) -> Draft:
        t0 = time.perf_counter()
        ctx = self._context()
        n_max = min(n_max, ctx.n_ctx - 1)
        out = Draft(dists=None if self._dist is None else [])
        if n_max <= 0:
            return out
        if self._sync(history, last, n_max) > 2:  # catching up after plain steps, not the cost of drafting
            out.overhead = time.perf_counter() - t0
        pos = len(self._cached) - 1
        batch = self._batch
        assert batch is not None
        while True:
            tok = self._choose(ctx, out)
            if tok is None:
                break
            out.tokens.append(tok)
            if len(out.tokens) >= n_max or self.model.vocab.is_eog(tok):
                break  # nothing is generated after an end-of-generation token
            pos += 1
            batch.clear()
            batch.add(tok, pos, 0, True)
            ctx.decode(batch)
            self._cached.append(tok)
        return out

    def _choose(self, ctx: Context, out: Draft) -> int | None:
        """The next draft token from the last decode, or None when the draft model is not confident."""
        if self._dist is None:
            tok = self._greedy.sample(ctx, -1)
            if self.p_min > 0.0:
                logits = ctx.logits(-1)
                if 1.0 / float(np.exp(logits - logits[tok]).sum()) < self.p_min:
                    return None
            return tok
        ids, q = self._dist(ctx, -1)
        if float(q.max()) < self.p_min:
            return None
        assert self._rng is not None and out.dists is not None
        tok = draw(ids, q, self._rng)
        out.dists.append((ids, q))
        return tok

    def close(self) -> None:
        if self._owns_ctx and self.ctx is not None:
            self.ctx.close()
            self.ctx = None
        if self._owns_model:
            self.model.close()


class NgramDrafter:
    """Drafts from the text itself, no second model needed (drafting costs microseconds).

    First choice is a copy: what followed the longest earlier occurrence of the text's end in
    the prompt or the output (:class:`PromptLookup`, at least ``min_match`` tokens agreeing), as
    long as the draft may be. Failing that, the n-gram caches, as llama.cpp's lookup decoding
    does: the continuation of the longest n-gram (up to ``ngram_max`` tokens) seen in the text,
    then ``dynamic`` (a cache of earlier generations) and ``static`` (2-grams of a corpus).
    """

    def __init__(self, ngram_min: int = 1, ngram_max: int = NGRAM_MAX, dynamic: NgramCache | None = None,
                 static: NgramCache | None = None, min_match: int = 3):
        check_ngram_sizes(ngram_min, ngram_max)
        self.ngram_min, self.ngram_max = ngram_min, ngram_max
        self.dynamic, self.static = dynamic, static
        self.context = NgramCache()
        self.lookup = PromptLookup(min_match)
        self._n = 0  # tokens counted into the context cache
        self._tail: list[int] = []  # the last NGRAM_MAX of them

    def begin(self, target: Context, tokens: Sequence[int], cfg: GenerationConfig,
              rng: np.random.Generator | None) -> None:
        self._reset()

    def _reset(self) -> None:
        self.context.clear()
        self.lookup.reset()
        self._n, self._tail = 0, []

    def draft(self, history: Sequence[int], last: int, n_max: int) -> Draft:
        if len(history) < self._n or (self._n and history[self._n - 1] != self._tail[-1]):
            self._reset()  # the text changed (a new prompt, a context shift): count it afresh
        new = list(history[self._n:]) + [last]
        recent = self._tail + new
        self.context.update(recent, self.ngram_min, self.ngram_max, n_new=len(new))
        self._n += len(new)
        self._tail = recent[-NGRAM_MAX:]
        self.lookup.extend(new)
        tokens = self.lookup.draft(n_max)
        if tokens:
            return Draft(tokens)
        tokens = self.context.draft(self._tail, n_max, self.ngram_min, self.ngram_max, dynamic=self.dynamic,
                                    static=self.static) if n_max > 0 else []
        return Draft(tokens)

    def close(self) -> None:
        pass


# -- draft length ------------------------------------------------------------------------------
class DraftLengthPolicy:
    """Picks each draft's length: the one with the most expected tokens per second.

    It keeps a decaying estimate of the per-token acceptance rate a, of the time of a plain step
    t1 and of the extra time per drafted token c, and picks k in 0..n_max maximising
    (1 + a + ... + a^k) / (t1 + c k). k = 0 is plain decoding. While there, it tries a short
    draft now and then (less and less often while those do not pay) to notice when the text
    becomes predictable again. A drafter that must read every token of the text first (a draft
    model: ``catch_up``) would pay that reading on every try, so it is tried again only once
    every RETRY_GENERATIONS generations, and is not run at all in between.
    """

    DECAY = 0.8
    PROBE_FIRST, PROBE_MAX = 16, 256
    RETRY_GENERATIONS = 8

    def __init__(self, n_max: int, catch_up: bool = False):
        self.n_max = n_max
        self.catch_up = catch_up
        self.t_plain: float | None = None
        self.t_per_draft: float | None = None
        self._acc = 4.0 * 0.7  # prior: 70% of 4 drafted tokens accepted
        self._tries = 4.0
        self._plain_steps = 0
        self._probe_every = self.PROBE_FIRST
        self._idle_generations = 0
        self._retry = False

    @property
    def acceptance(self) -> float:
        return self._acc / self._tries

    def best_k(self) -> int:
        """The draft length with the most expected tokens per second under the current estimates."""
        if self.t_plain is None or self.t_per_draft is None:
            return self.n_max
        a = min(self.acceptance, 0.999)
        t1, c = self.t_plain, self.t_per_draft
        rates = [(1 - a ** (k + 1)) / (1 - a) / (t1 + c * k) for k in range(self.n_max + 1)]
        return int(np.argmax(rates))

    def new_generation(self) -> bool:
        """A generation starts: whether drafting may happen in it at all."""
        if not self.catch_up or self.best_k() > 0:
            return True
        self._idle_generations += 1
        if self._idle_generations < self.RETRY_GENERATIONS:
            return False
        self._idle_generations = 0
        self._retry = True
        return True

    def next(self) -> int:
        """How many tokens to draft now (0: a plain step)."""
        if self.t_plain is None:
            return 0  # measure a plain step first
        if self.t_per_draft is None:
            return min(self.n_max, 4)
        k = self.best_k()
        if k > 0:
            self._plain_steps = 0
            self._probe_every = self.PROBE_FIRST
            return k
        if self._retry:
            self._retry = False
            return min(self.n_max, 2)
        if self.catch_up:
            return 0
        self._plain_steps += 1
        if self._plain_steps >= self._probe_every:
            self._plain_steps = 0
            self._probe_every = min(2 * self._probe_every, self.PROBE_MAX)
            return min(self.n_max, 2)
        return 0

    def record(self, n_drafted: int, n_accepted: int, seconds: float) -> None:
        """What a step cost: ``n_drafted`` tokens verified, ``n_accepted`` of them kept."""
        d = self.DECAY
        if n_drafted == 0:
            self.t_plain = seconds if self.t_plain is None else d * self.t_plain + (1 - d) * seconds
            return
        # per-token acceptance as a geometric run: n_accepted successes, then one failure unless all passed
        self._acc = d * self._acc + n_accepted
        self._tries = d * self._tries + n_accepted + (n_accepted < n_drafted)
        if self.t_plain is not None:
            extra = max(0.0, seconds - self.t_plain) / n_drafted
            self.t_per_draft = extra if self.t_per_draft is None else d * self.t_per_draft + (1 - d) * extra


# -- the loop ----------------------------------------------------------------------------------
class SpeculativeDecoder:
    """Generation with speculation over a target context: the loop LLM runs instead of the plain one.

    Each step decodes the last sampled token together with a draft, keeps what the target agrees
    with, removes the rest from the target's memory (``memory.seq_rm``) and goes on from there.
    """

    def __init__(self, drafter: Drafter, n_draft: int):
        if n_draft < 1:
            raise ValueError("n_draft must be >= 1")
        self.drafter = drafter
        self.policy = DraftLengthPolicy(n_draft, catch_up=isinstance(drafter, DraftModelDrafter))
        self._batch: Batch | None = None
        self._seed = 0
        self._drafting = True

    @staticmethod
    def applies(cfg: GenerationConfig) -> bool:
        """Whether these settings can be sped up (mirostat adapts to every sampled token: no)."""
        return cfg.mirostat == 0

    def begin(self, ctx: Context, tokens: Sequence[int], cfg: GenerationConfig) -> None:
        """A generation starts with ``tokens`` in ``ctx``'s memory (call before timing generation)."""
        random = cfg.seed is None or cfg.seed < 0
        self._seed = int(np.random.default_rng().integers(2**63)) if random else cfg.seed
        rng = None if cfg.greedy else np.random.default_rng([self._seed, 1])
        self._drafting = self.policy.new_generation()
        self.drafter.begin(ctx, tokens if self._drafting else (), cfg, rng)
        if self._batch is None or self._batch.capacity < self.policy.n_max + 1:
            self._batch = Batch(self.policy.n_max + 1)

    def run(self, ctx: Context, cached: list[int], cfg: GenerationConfig, sampler: SamplerChain,
            out: TokenStream, shift: Callable[[Context], None] | None) -> Iterator[str]:
        """Generate into ``out`` until it is done; ``cached`` mirrors the target's memory and is
        kept up to date; ``shift`` makes room when the context is full (None: stop there)."""
        greedy = cfg.greedy
        dist = None
        if not greedy:
            sampler.remove(-1)  # the final draw is made here, by speculative sampling
            dist = TokenDistribution(sampler, ctx.model.vocab.n_tokens)
        seed = self._seed
        batch = self._batch
        assert batch is not None
        stats = out.stats
        policy, drafter, mem = self.policy, self.drafter, ctx.memory

        def choose(i: int, draft: Draft | None = None) -> int:
            """The target's token from output ``i`` (verifying token ``i`` of ``draft`` when given).

            Random numbers come from a stream per output position, so that with n-gram or greedy
            drafts the text a seed gives does not depend on how the drafts were cut."""
            if dist is None:
                return sampler.sample(ctx, i)
            rng = np.random.default_rng([seed, 0, stats.completion_tokens + max(i, 0)])
            p_ids, p = dist(ctx, i)
            if draft is None:
                tok = draw(p_ids, p, rng)
            else:
                q_ids, q = draft.dists[i] if draft.dists is not None else (None, None)
                tok = speculative_sample(p_ids, p, draft.tokens[i], q_ids, q, rng)
            sampler.accept(tok)
            return tok

        try:
            tok = choose(-1)
            text = out.push(ctx, -1, tok)
            if text:
                yield text
            while not out.done:
                if len(cached) >= ctx.n_ctx:
                    if shift is None:
                        out.finish_with("length")
                        break
                    shift(ctx)
                base = len(cached)
                k = max(0, min(policy.next() if self._drafting else 0, ctx.n_ctx - base - 1,
                               cfg.max_tokens - stats.completion_tokens - 1))
                t0 = time.perf_counter()
                draft = drafter.draft(cached, tok, k) if k > 0 else Draft()
                drafts = draft.tokens
                batch.clear()
                batch.add_sequence([tok] + drafts, base, 0, "all")
                ctx.decode(batch)
                cached.append(tok)
                ids = []
                for j in range(len(drafts) + 1):
                    ids.append(choose(j, draft if j < len(drafts) else None))
                    if j == len(drafts) or ids[-1] != drafts[j]:
                        break
                n_acc = len(ids) - 1
                policy.record(len(drafts), n_acc, time.perf_counter() - t0 - draft.overhead)
                stats.drafted += len(drafts)
                stats.accepted += n_acc
                for i, t in enumerate(ids):
                    text = out.push(ctx, i, t)
                    if not out.done and i < n_acc:
                        cached.append(t)
                    if text:
                        yield text
                    if out.done:
                        break
                mem.seq_rm(0, len(cached), -1)  # rejected drafts (and accepted ones past the end)
                tok = ids[-1]
        finally:
            mem.seq_rm(0, len(cached), -1)

    def close(self) -> None:
        self.drafter.close()


def make_speculator(model: Model, draft_model: str | os.PathLike | Model | None, speculative: Any,
                    n_draft: int | None, n_gpu_layers: int | None = None) -> SpeculativeDecoder | None:
    """The SpeculativeDecoder LLM's settings ask for, or None.

    ``speculative``: None (a draft model if one is given), "draft", "ngram", or a Drafter.
    A draft model whose vocabulary does not match raises VocabMismatchError.
    """
    if speculative is None and draft_model is None:
        if n_draft is not None:
            raise ValueError("n_draft needs speculative decoding: give draft_model= or speculative='ngram'")
        return None
    if isinstance(speculative, str) and speculative not in ("draft", "ngram"):
        raise ValueError(f"speculative must be 'draft' or 'ngram' (or a drafter), got {speculative!r}")
    if draft_model is not None and speculative not in (None, "draft"):
        raise ValueError("draft_model= is for draft-model speculation; leave speculative unset (or 'draft')")
    if speculative == "ngram":
        return SpeculativeDecoder(NgramDrafter(), n_draft or 16)
    if speculative is not None and speculative != "draft":
        return SpeculativeDecoder(speculative, n_draft or 8)
    if draft_model is None:
        raise ValueError("speculative='draft' needs draft_model= (a GGUF file of a smaller model)")
    owned = not isinstance(draft_model, Model)
    dm = Model.from_file(draft_model, **({} if n_gpu_layers is None else {"n_gpu_layers": n_gpu_layers})) \
        if owned else draft_model
    try:
        check_compatible(model, dm)
    except VocabMismatchError:
        if owned:
            dm.close()
        raise
    return SpeculativeDecoder(DraftModelDrafter(dm, owns_model=owned), n_draft or 8)


# -- the reference API -----------------------------------------------------------------------
class Speculative:
    """Draft-model speculation over two contexts (cyllama's API): check that the pair fits,
    then draft tokens with the draft context for the target to verify."""

    def __init__(self, ctx_target: Context, ctx_draft: Context):
        self.ctx_target = ctx_target
        self.ctx_draft = ctx_draft
        self._difference: str | None | bool = False  # False: not checked yet
        self._drafter = DraftModelDrafter(ctx_draft.model, ctx_draft)

    def _why_incompatible(self) -> str | None:
        if self._difference is False:
            self._difference = vocab_difference(self.ctx_target.model, self.ctx_draft.model)
        return self._difference  # type: ignore[return-value]

    def are_compatible(self) -> bool:
        """Whether the draft model's vocabulary matches the target's (as llama.cpp checks it)."""
        return self._why_incompatible() is None

    def gen_draft(self, params: SpeculativeParams, prompt_tokens: Sequence[int], last_token: int) -> list[int]:
        """Tokens the draft model expects after ``prompt_tokens`` + [``last_token``] (greedy, at most
        ``params.n_draft``, stopping below ``params.p_min``)."""
        params.validate()
        why = self._why_incompatible()
        if why is not None:
            raise VocabMismatchError(f"the draft model cannot draft for the target: {why}")
        d = self._drafter
        d.p_min, d.n_reuse = params.p_min, params.n_reuse
        return d.draft(list(prompt_tokens), int(last_token), params.n_draft).tokens


__all__ = ["Speculative", "SpeculativeParams", "SpeculativeDecoder", "DraftModelDrafter", "NgramDrafter",
           "DraftLengthPolicy", "Draft", "Drafter", "TokenDistribution", "VocabMismatchError", "check_compatible",
           "vocab_difference", "speculative_sample", "draw", "make_speculator"]

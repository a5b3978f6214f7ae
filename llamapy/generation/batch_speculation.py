"""Speculation for one sequence of the batch generator.

Each step, a generating sequence puts its last token and a draft into the shared batch, all with
logits; the target's tokens are then chosen at each drafted position in turn, and the draft is
kept up to the first disagreement. Drafts come from the sequence's own text (n-gram,
:class:`NgramDrafter`) or from a smaller model with a context per sequence
(:class:`DraftModelDrafter`). Greedy choices are the target's argmax; at temperature > 0 each
position uses speculative sampling with a random stream per output position, which keeps the
target's distribution. A sequence keeps its drafter and draft-length policy from one request
to the next, so a draft model's cache and the measured step costs carry over.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from ..context import Context
from .config import GenerationConfig
from .speculative import (Draft, DraftLengthPolicy, DraftModelDrafter, Drafter, TokenDistribution, draw,
                          speculative_sample)


class SlotSpeculation:
    """Drafting and verification state of one sequence."""

    def __init__(self, drafter: Drafter, n_draft: int):
        self.drafter = drafter
        self.policy = DraftLengthPolicy(n_draft, catch_up=isinstance(drafter, DraftModelDrafter))
        self.draft = Draft()
        self.dist: TokenDistribution | None = None
        self.seed = 0
        self._drafting = True
        self._started = 0.0

    def start(self, target: Context, tokens: Sequence[int], cfg: GenerationConfig, sampler: Any) -> None:
        """A request starts on this sequence with prompt ``tokens`` and its own ``sampler``."""
        random = cfg.seed is None or cfg.seed < 0
        self.seed = int(np.random.default_rng().integers(2**63)) if random else cfg.seed
        self.dist = None
        if not cfg.greedy:
            sampler.remove(-1)  # the final draw is made here, from a stream per position
            self.dist = TokenDistribution(sampler, target.model.vocab.n_tokens)
        self._drafting = self.policy.new_generation()
        rng = None if cfg.greedy else np.random.default_rng([self.seed, 1])
        self.drafter.begin(target, tokens if self._drafting else (), cfg, rng)
        self.draft, self._started = Draft(), 0.0

    def propose(self, tokens: Sequence[int], last: int, room: int) -> list[int]:
        """The draft to decode after ``last`` (at most ``room`` tokens; empty for a plain step)."""
        t0 = time.perf_counter()
        k = min(self.policy.next() if self._drafting else 0, room)
        self.draft = self.drafter.draft(tokens, last, k) if k > 0 else Draft()
        self._started = t0 + self.draft.overhead  # catching up with the text is not the cost of drafting
        return self.draft.tokens

    def choose(self, sampler: Any, ctx: Context, idx: int, position: int, j: int) -> int:
        """The target's token from output ``idx`` of the decode, the ``position``-th of the reply,
        verifying draft token ``j`` when there is one."""
        if self.dist is None:
            return sampler.sample(ctx, idx)
        ids, probs = self.dist(ctx, idx)
        rng = np.random.default_rng([self.seed, 0, position])
        draft = self.draft
        if j < len(draft.tokens):
            q_ids, q = draft.dists[j] if draft.dists is not None else (None, None)
            tok = speculative_sample(ids, probs, draft.tokens[j], q_ids, q, rng)
        else:
            tok = draw(ids, probs, rng)
        sampler.accept(tok)
        return tok

    def record(self, n_accepted: int) -> None:
        """The step is verified: ``n_accepted`` drafted tokens were kept (nothing to record after a
        step that proposed nothing, as the one ending the prompt)."""
        if self._started:
            self.policy.record(len(self.draft.tokens), n_accepted, time.perf_counter() - self._started)
        self.draft, self._started = Draft(), 0.0

    def close(self) -> None:
        self.drafter.close()


__all__ = ["SlotSpeculation"]

"""N-gram speculation for one sequence of the batch generator.

Each step, a generating sequence puts its last token and a draft taken from its own text (prompt
and output, :class:`NgramDrafter`) into the shared batch, all with logits; the target's tokens
are then chosen at each drafted position in turn, and the draft is kept up to the first
disagreement. Greedy choices are the target's argmax; at temperature > 0 every position draws
from the target's distribution with a random stream per output position, so a seed gives the
same text with or without drafts (an n-gram draft is chosen outright: see ``speculative_sample``).
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from ..context import Context
from .config import GenerationConfig
from .speculative import DraftLengthPolicy, NgramDrafter, TokenDistribution, draw


class SlotSpeculation:
    """Drafting and verification state of one sequence."""

    def __init__(self, n_draft: int, cfg: GenerationConfig, sampler: Any, n_vocab: int):
        self.drafter = NgramDrafter()
        self.policy = DraftLengthPolicy(n_draft)
        self.drafts: list[int] = []
        self._started = 0.0
        self.dist: TokenDistribution | None = None
        if not cfg.greedy:
            sampler.remove(-1)  # the final draw is made here, from a stream per position
            self.dist = TokenDistribution(sampler, n_vocab)
        random = cfg.seed is None or cfg.seed < 0
        self.seed = int(np.random.default_rng().integers(2**63)) if random else cfg.seed

    def propose(self, tokens: Sequence[int], last: int, room: int) -> list[int]:
        """The draft to decode after ``last`` (at most ``room`` tokens; empty for a plain step)."""
        k = min(self.policy.next(), room)
        self.drafts = self.drafter.draft(tokens, last, k).tokens if k > 0 else []
        self._started = time.perf_counter()
        return self.drafts

    def choose(self, sampler: Any, ctx: Context, idx: int, position: int) -> int:
        """The target's token from output ``idx`` of the decode, the ``position``-th of the reply."""
        if self.dist is None:
            return sampler.sample(ctx, idx)
        ids, probs = self.dist(ctx, idx)
        tok = draw(ids, probs, np.random.default_rng([self.seed, 0, position]))
        sampler.accept(tok)
        return tok

    def record(self, n_accepted: int) -> None:
        """The step is verified: ``n_accepted`` drafted tokens were kept (nothing to record after a
        step that proposed nothing, as the one ending the prompt)."""
        if self._started:
            self.policy.record(len(self.drafts), n_accepted, time.perf_counter() - self._started)
        self.drafts, self._started = [], 0.0


__all__ = ["SlotSpeculation"]

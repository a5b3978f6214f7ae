"""GenerationConfig and GenerationStats: what to generate and how it went."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..model import Model
from ..sampler import SamplerChain
from .grammar import BACKENDS, ConstrainedSampler, Grammar, constrain


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling and run settings. Every field can be overridden per call by keyword.

    The defaults are the ones users of other bindings rely on (max_tokens 512, repeat_penalty
    1.1, ...). ``temperature`` 0 (or below) is greedy. ``n_ctx`` None picks the model's
    training context, capped at 4096. ``add_bos`` True adds the BOS token when the model uses
    one, False never. ``seed`` -1 or None is random.
    """

    max_tokens: int = 512
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = 1024
    mirostat: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    seed: int | None = -1
    stop_sequences: Sequence[str] = ()
    logit_bias: Mapping[int, float] | None = None
    grammar: str | Grammar | None = None  # GBNF text, or a Grammar (Lark, regex, lazy triggers)
    json_schema: Mapping[str, Any] | None = None
    grammar_triggers: Sequence[str] = ()  # regexes: the grammar starts constraining at the first match (lazy)
    grammar_backend: str | None = None  # "llguidance" or "llama"; None: the fastest one installed
    logprobs: int | None = None
    n_gpu_layers: int | None = 99
    n_ctx: int | None = None
    n_batch: int = 512
    n_threads: int | None = None
    add_bos: bool | None = True
    parse_special: bool = True
    context_shift: bool = False
    ignore_eos: bool = False  # keep generating past end-of-generation tokens (benchmarks)

    def replace(self, **overrides: Any) -> GenerationConfig:
        """A copy with some fields changed; unknown names raise TypeError."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown generation setting(s): {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        if isinstance(overrides.get("stop_sequences"), str):
            overrides["stop_sequences"] = (overrides["stop_sequences"],)
        return dataclasses.replace(self, **overrides)

    def validate(self) -> None:
        if self.max_tokens < 0:
            raise ValueError("max_tokens must be >= 0")
        if self.mirostat not in (0, 1, 2):
            raise ValueError("mirostat must be 0 (off), 1 or 2")
        if self.grammar and self.json_schema:
            raise ValueError("give either grammar or json_schema, not both")
        if self.grammar_backend is not None and self.grammar_backend not in BACKENDS:
            raise ValueError(f"unknown grammar_backend {self.grammar_backend!r}; valid: {', '.join(BACKENDS)}")
        if self.logprobs is not None and self.logprobs < 0:
            raise ValueError("logprobs must be >= 0")
        if any(not s for s in self.stop_sequences):
            raise ValueError("stop sequences must not be empty strings")

    @property
    def bos(self) -> bool | None:
        """``add_bos`` as Vocab.tokenize_prompt takes it: None (as the model wants) or False (never)."""
        return None if self.add_bos else False

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0 and self.mirostat == 0

    def grammar_text(self) -> str | None:
        """The GBNF grammar to constrain output with, from ``grammar`` or ``json_schema``."""
        if self.json_schema is not None:
            from .json_schema import schema_to_gbnf

            return schema_to_gbnf(self.json_schema)
        return self.grammar

    def grammar_spec(self) -> Grammar | None:
        """What output must match, from ``grammar`` or ``json_schema`` (lazy with ``grammar_triggers``)."""
        if self.json_schema is not None:
            spec = Grammar.json_schema(self.json_schema)
        elif isinstance(self.grammar, Grammar):
            spec = self.grammar
        elif self.grammar:
            spec = Grammar.gbnf(self.grammar)
        else:
            return None
        return spec.lazy(patterns=self.grammar_triggers) if self.grammar_triggers else spec

    def sampler(self, model: Model) -> SamplerChain | ConstrainedSampler:
        """The llama.cpp sampler chain for these settings, behind the grammar if there is one
        (enforced by ``grammar_backend``)."""
        chain = self._chain(model)
        grammar = self.grammar_spec()
        return constrain(model, grammar, chain, self.grammar_backend) if grammar is not None else chain

    def _chain(self, model: Model) -> SamplerChain:
        vocab = model.vocab
        chain = SamplerChain()
        if self.logit_bias:
            chain.add_logit_bias(vocab.n_tokens, self.logit_bias)
        if self.repeat_penalty != 1.0 or self.presence_penalty or self.frequency_penalty:
            chain.add_penalties(self.repeat_last_n, self.repeat_penalty, self.frequency_penalty,
                                self.presence_penalty)
        if self.dry_multiplier:
            chain.add_dry(vocab, self.dry_multiplier, self.dry_base, self.dry_allowed_length,
                          self.dry_penalty_last_n)
        if self.greedy:
            return chain.add_greedy()
        if self.mirostat == 1:
            return chain.add_temp(self.temperature).add_mirostat(vocab.n_tokens, self.seed, self.mirostat_tau,
                                                                 self.mirostat_eta)
        if self.mirostat == 2:
            return chain.add_temp(self.temperature).add_mirostat_v2(self.seed, self.mirostat_tau, self.mirostat_eta)
        if self.top_k > 0:
            chain.add_top_k(self.top_k)
        if self.typical_p < 1.0:
            chain.add_typical(self.typical_p)
        if self.top_p < 1.0:
            chain.add_top_p(self.top_p)
        if self.min_p > 0.0:
            chain.add_min_p(self.min_p)
        return chain.add_temp(self.temperature).add_dist(self.seed)


@dataclass
class TokenLogprob:
    """Log-probability of a generated token and of the most likely alternatives."""

    token: int
    text: str
    logprob: float
    top: list[tuple[int, str, float]] = field(default_factory=list)


@dataclass
class GenerationStats:
    """What one generation cost and why it ended."""

    prompt_tokens: int = 0
    prompt_tokens_decoded: int = 0  # prompt tokens not found in the cache (the rest was reused)
    completion_tokens: int = 0
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0
    time_to_first_token: float = 0.0
    finish_reason: str = ""  # "stop" (end of generation or a stop sequence), "length"
    logprobs: list[TokenLogprob] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # the generated token ids
    drafted: int = 0  # speculative decoding: draft tokens the model verified
    accepted: int = 0  # ... and those it kept

    # The names users of other bindings read.
    @property
    def generated_tokens(self) -> int:
        return self.completion_tokens

    @property
    def prompt_time(self) -> float:
        return self.prompt_seconds

    @property
    def generation_time(self) -> float:
        return self.generation_seconds

    @property
    def total_time(self) -> float:
        return self.total_seconds

    @property
    def total_seconds(self) -> float:
        return self.prompt_seconds + self.generation_seconds

    @property
    def tokens_per_second(self) -> float:
        """Generation speed (completion tokens / generation time)."""
        return self.completion_tokens / self.generation_seconds if self.generation_seconds else 0.0

    @property
    def prompt_tokens_per_second(self) -> float:
        return self.prompt_tokens_decoded / self.prompt_seconds if self.prompt_seconds else 0.0

    @property
    def acceptance_rate(self) -> float:
        """Share of the drafted tokens the model kept (0 without speculation)."""
        return self.accepted / self.drafted if self.drafted else 0.0

    def summary(self) -> str:
        draft = (f"; speculation: {self.accepted} of {self.drafted} drafted tokens accepted "
                 f"({100 * self.acceptance_rate:.1f}%)" if self.drafted else "")
        return (f"prompt: {self.prompt_tokens} tokens ({self.prompt_tokens_decoded} decoded) in "
                f"{self.prompt_seconds:.2f} s ({self.prompt_tokens_per_second:.1f} t/s); generation: "
                f"{self.completion_tokens} tokens in {self.generation_seconds:.2f} s "
                f"({self.tokens_per_second:.1f} t/s){draft}; finish: {self.finish_reason}")

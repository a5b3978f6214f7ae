"""Samplers and chains: every built-in sampler, grammar, logit bias, Python samplers, clone/reset."""
from __future__ import annotations

import numpy as np
import pytest

from llamapy import Batch, Context, GrammarError, LlamaError, PySampler, Sampler, SamplerChain
from llamapy.sampler import TOKEN_DATA

PROMPT = "My favourite colour is"


@pytest.fixture
def ctx(model):
    with Context(model, n_ctx=512, n_threads=2) as c:
        c.decode(Batch.from_tokens(model.vocab.tokenize(PROMPT)))
        yield c


def generate(ctx: Context, sampler: Sampler, n: int) -> list[int]:
    out = []
    for _ in range(n):
        t = sampler.sample(ctx, -1)
        out.append(t)
        if ctx.model.vocab.is_eog(t):
            break
        ctx.decode(Batch.from_tokens([t]))
    return out


def test_every_builtin_sampler_builds_and_samples(model, ctx):
    v = model.vocab
    chain = (SamplerChain()
             .add_logit_bias(v.n_tokens, {13: -1.0})
             .add_penalties(64, 1.1, 0.1, 0.1)
             .add_dry(v)
             .add_top_k(40)
             .add_top_p(0.95)
             .add_min_p(0.05)
             .add_typical(0.99)
             .add_xtc(0.1, 0.5, seed=3)
             .add_top_n_sigma(3.0)
             .add_temp_ext(0.8, 0.1)
             .add_temp(0.9)
             .add_dist(seed=42))
    assert chain.names == ["logit-bias", "penalties", "dry", "top-k", "top-p", "min-p", "typical", "xtc",
                           "top-n-sigma", "temp-ext", "temp", "dist"]
    assert 0 <= chain.sample(ctx, -1) < v.n_tokens
    for s in (SamplerChain([Sampler.mirostat(v.n_tokens, seed=1)]), SamplerChain([Sampler.mirostat_v2(seed=1)]),
              SamplerChain([Sampler.adaptive_p(0.5, seed=1)]),
              SamplerChain([Sampler.top_k(5), Sampler.infill(v), Sampler.greedy()])):
        assert 0 <= s.sample(ctx, -1) < v.n_tokens
    assert len(chain) == 12 and chain.seed == 42


def test_a_chain_that_chooses_nothing_is_refused(model, ctx):
    with pytest.raises(LlamaError, match="does not choose a token"):
        SamplerChain([Sampler.top_k(5)]).sample(ctx, -1)
    with pytest.raises(LlamaError, match="does not choose a token"):
        Sampler.top_p(0.9).sample(ctx, -1)
    with pytest.raises(IndexError, match="no logits"):
        SamplerChain.greedy().sample(ctx, 1)  # only the last prompt token has logits
    with Context(model, n_ctx=64, n_threads=1) as fresh:
        with pytest.raises(IndexError, match="no logits"):
            SamplerChain.greedy().sample(fresh, -1)


def test_seeded_dist_is_reproducible_and_reset(model):
    def run(seed):
        with Context(model, n_ctx=256, n_threads=2) as c:
            c.decode(Batch.from_tokens(model.vocab.tokenize(PROMPT)))
            return generate(c, SamplerChain().add_top_k(50).add_temp(1.5).add_dist(seed), 12)
    assert run(7) == run(7)
    assert run(7) != run(8)


def test_temperature_zero_like_greedy(model, ctx):
    logits = ctx.logits().copy()
    assert SamplerChain.greedy().sample(ctx, -1) == int(np.argmax(logits))


def test_logit_bias_forbids_a_token(model, ctx):
    best = int(np.argmax(ctx.logits()))
    s = SamplerChain().add_logit_bias(model.vocab.n_tokens, {best: float("-inf")}).add_greedy()
    assert s.sample(ctx, -1) != best


def test_grammar_constrains_output(model, ctx):
    s = SamplerChain().add_grammar(model.vocab, 'root ::= ("red" | "green" | "blue") "."').add_greedy()
    text = model.vocab.detokenize(generate(ctx, s, 10))
    assert text.strip() in {"red.", "green.", "blue."}


def test_invalid_grammar_is_a_clear_error(model):
    with pytest.raises(GrammarError, match="invalid grammar"):
        Sampler.grammar(model.vocab, 'root ::= "unterminated')
    with pytest.raises(GrammarError):
        Sampler.grammar(model.vocab, 'root ::= missing-rule')


def test_lazy_grammar_waits_for_its_trigger(model):
    s = Sampler.grammar_lazy(model.vocab, 'root ::= "{" [a-z]+ "}"', trigger_patterns=[r"\{"])
    assert s.name == "grammar"


class BanTopToken(PySampler):
    name = "ban-top"

    def __init__(self):
        self.accepted = []

    def apply(self, candidates: np.ndarray) -> None:
        candidates["logit"][np.argmax(candidates["logit"])] = -np.inf

    def accept(self, token: int) -> None:
        self.accepted.append(token)


def test_python_sampler_in_a_chain(model, ctx):
    best = int(np.argmax(ctx.logits()))
    impl = BanTopToken()
    chain = SamplerChain().add_custom(impl).add_greedy()
    assert chain.names == ["ban-top", "greedy"]
    tok = chain.sample(ctx, -1)
    assert tok != best and impl.accepted == [tok]
    with pytest.raises(LlamaError, match="cannot be cloned"):
        chain.clone()


def test_apply_on_candidates_array(model):
    cand = np.zeros(5, dtype=TOKEN_DATA)
    cand["id"] = np.arange(5)
    cand["logit"] = [1.0, 5.0, 3.0, 2.0, 4.0]
    kept = Sampler.top_k(2).apply(cand)
    assert sorted(kept["id"].tolist()) == [1, 4]


def test_clone_remove_and_ownership(model, ctx):
    top = Sampler.top_k(10)
    chain = SamplerChain([top, Sampler.greedy()])
    assert top.closed  # the chain owns it now
    copy = chain.clone()
    assert copy.names == chain.names and copy.sample(ctx, -1) == chain.sample(ctx, -1)
    removed = chain.remove(0)
    assert removed.name == "top-k" and chain.names == ["greedy"]
    chain.add(removed)
    assert chain.names == ["greedy", "top-k"]
    with pytest.raises(IndexError):
        chain.remove(7)
    chain.reset()
    chain.close()
    chain.close()

"""Speculative decoding: same greedy output as plain decoding, the target's distribution when
sampling, vocabulary checks, the adaptive draft length, the reference API and the CLI flags."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from llamapy import (
    LLM,
    GenerationConfig,
    LlamaContext,
    LlamaContextParams,
    LlamaModel,
    LlamaModelParams,
    Speculative,
    SpeculativeParams,
)
from llamapy.batch import Batch
from llamapy.context import Context
from llamapy.generation.speculative import (
    DraftLengthPolicy,
    NgramDrafter,
    SpeculativeDecoder,
    TokenDistribution,
    VocabMismatchError,
    speculative_sample,
)
from llamapy.generation.prompt_lookup import PromptLookup
from llamapy.hub.catalog import pull

CODE_PROMPT = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
PROMPTS = [CODE_PROMPT, "The three primary colors are", "import numpy as np\n\n# mean of a list of numbers\n"]
REPETITIVE = [
    "1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3,",
    "Copy the line five times.\nthe cat sat on the mat\nthe cat sat on the mat\nthe cat",
    "def add(a, b):\n    return a + b\n\n\ndef add(a, b):\n",
]


@pytest.fixture(scope="module")
def qwen_path():
    """Qwen2.5-Coder 0.5B: target and draft at once (a failed fetch fails the tests)."""
    return pull("qwen2.5-coder-0.5b-instruct", quiet=True)


# Greedy without a repetition penalty: the draft model then proposes exactly what the target picks.
QWEN = dict(temperature=0, repeat_penalty=1.0, max_tokens=32, n_ctx=1024, n_threads=2)


@pytest.fixture(scope="module")
def plain_qwen(qwen_path):
    with LLM(qwen_path, **QWEN) as llm:
        yield llm


@pytest.fixture(scope="module")
def plain_smol(model_path):
    with LLM(model_path, temperature=0, max_tokens=48, n_ctx=1024, n_threads=2) as llm:
        yield llm


def _run(llm: LLM, prompt: str, **kw):
    text, stats = llm.generate_with_stats(prompt, **kw)
    return text, list(stats.tokens), stats


_plain_results: dict = {}

# llama.cpp's CPU kernels round a batch of several tokens differently from a single token, by up
# to about 0.6 in the logits (measured on these models): where the two best tokens are closer
# than this, a verified batch may take the other one, and the texts go separate ways from there.
NEAR_TIE = 1.0


def _plain(llm: LLM, prompt: str, **kw):
    """(text, tokens, margins) of plain decoding, computed once per model, prompt and settings;
    margins[i] is how far the chosen token's logit was ahead of the runner-up's."""
    key = (id(llm), prompt, tuple(sorted(kw.items())))
    if key not in _plain_results:
        text, tokens, stats = _run(llm, prompt, logprobs=2, **kw)
        margins = [lp.top[0][2] - lp.top[1][2] for lp in stats.logprobs]
        _plain_results[key] = text, tokens, margins
    return _plain_results[key]


def _same_as_plain(text: str, tokens: list[int], plain: tuple) -> bool:
    """Token for token the plain output; after a near-tie of the plain run, the same up to it.
    Returns whether the whole output was compared (no near-tie)."""
    p_text, p_tokens, margins = plain
    tie = next((i for i, m in enumerate(margins) if m < NEAR_TIE), None)
    if tie is None:
        assert (text, tokens) == (p_text, p_tokens)
        return True
    assert tokens[:tie] == p_tokens[:tie], f"diverged before the near-tie at token {tie}"
    return False


@pytest.mark.parametrize("n_draft", [3, 8])
def test_greedy_draft_model_output_equals_plain(plain_qwen, qwen_path, n_draft):
    with LLM(qwen_path, draft_model=qwen_path, n_draft=n_draft, **QWEN) as spec:
        drafted = accepted = 0
        exact = True
        prompts = PROMPTS + ([plain_qwen.chat_prompt([{"role": "user", "content": "Reverse a string in Python."}])]
                             if n_draft == 8 else [])
        for prompt in prompts:
            text, tokens, stats = _run(spec, prompt)
            exact &= _same_as_plain(text, tokens, _plain(plain_qwen, prompt))
            drafted += stats.drafted
            accepted += stats.accepted
        if n_draft == 8:  # a stop sequence inside accepted drafts
            text, tokens, _ = _run(spec, CODE_PROMPT, stop_sequences=("return",))
            _same_as_plain(text, tokens, _plain(plain_qwen, CODE_PROMPT, stop_sequences=("return",)))
    # the draft is the target itself, so every drafted token agrees (but for rounding at near-ties)
    assert drafted > 0 and (accepted == drafted if exact else accepted >= 0.9 * drafted)


@pytest.mark.parametrize("n_draft", [3, 8, 16])
def test_greedy_ngram_output_equals_plain(plain_smol, model_path, n_draft):
    with LLM(model_path, temperature=0, max_tokens=48, n_ctx=1024, n_threads=2, speculative="ngram",
             n_draft=n_draft) as spec:
        drafted = accepted = 0
        for prompt in REPETITIVE + PROMPTS[:1]:
            text, tokens, stats = _run(spec, prompt)
            _same_as_plain(text, tokens, _plain(plain_smol, prompt))
            assert stats.drafted >= stats.accepted >= 0 and stats.completion_tokens == len(tokens)
            drafted += stats.drafted
            accepted += stats.accepted
        assert accepted > 0 and 0 < accepted / drafted <= 1


def test_context_end_logprobs_and_cache_reuse_match_plain(plain_smol, model_path):
    with LLM(model_path, temperature=0, max_tokens=48, n_ctx=64, n_threads=2, speculative="ngram") as spec, \
            LLM(model_path, temperature=0, max_tokens=48, n_ctx=64, n_threads=2) as plain:
        prompt = REPETITIVE[0]
        for kw in ({}, {"context_shift": True, "max_tokens": 80}):
            text, tokens, stats = _run(spec, prompt, **kw)
            _same_as_plain(text, tokens, _plain(plain, prompt, **kw))
            assert stats.finish_reason == "length"
        # the draft length follows measured step times; a fresh policy drafts at its second step whatever
        # the earlier steps cost on a busy machine, so the logprobs below come from a verified batch
        spec._spec.policy = DraftLengthPolicy(spec._spec.policy.n_max)
        a, b = _run(spec, REPETITIVE[1], logprobs=2), _run(plain, REPETITIVE[1], logprobs=2)
        assert a[2].drafted > 0
        for x, y in zip(a[2].logprobs, b[2].logprobs):  # from the verified batch: the same up to rounding
            if x.token != y.token:
                break
            assert x.logprob == pytest.approx(y.logprob, abs=NEAR_TIE)
    # a follow-up prompt reuses the cache left by a speculative generation
    with LLM(model_path, temperature=0, max_tokens=24, n_ctx=1024, n_threads=2, speculative="ngram") as spec:
        first = spec(REPETITIVE[1])
        follow = REPETITIVE[1] + first + "\nthe cat"
        text, tokens, stats = _run(spec, follow)
        assert stats.prompt_tokens_decoded < stats.prompt_tokens
        _same_as_plain(text, tokens, _plain(plain_smol, follow, max_tokens=24))


# -- sampling keeps the target's distribution ---------------------------------------------------
@pytest.fixture(scope="module")
def verify_batch(model):
    """SmolLM2 after a fixed prompt with two drafted tokens decoded behind the last token."""
    ctx = Context(model, n_ctx=256, n_threads=2)
    vocab = model.vocab
    prompt = vocab.tokenize_prompt("My favourite animal is the")
    batch = Batch(256)
    batch.add_sequence(prompt[:-1], 0, 0, "none")
    ctx.decode(batch)
    # the draft: the second most likely next token, then the target's favourite after it
    batch.clear()
    batch.add_sequence(prompt[-1:], len(prompt) - 1, 0, "last")
    ctx.decode(batch)
    d1 = int(np.argsort(-ctx.logits(-1))[1])
    ctx.memory.seq_rm(0, len(prompt) - 1, -1)
    batch.clear()
    batch.add_sequence([prompt[-1], d1], len(prompt) - 1, 0, "all")
    ctx.decode(batch)
    d2 = int(np.argmax(ctx.logits(1)))
    ctx.memory.seq_rm(0, len(prompt) - 1, -1)
    batch.clear()
    batch.add_sequence([prompt[-1], d1, d2], len(prompt) - 1, 0, "all")
    ctx.decode(batch)
    yield ctx, [d1, d2]
    ctx.close()


# no repetition penalty: the reference chain is sampled many times at one position, and a penalty
# would remember every draw
SAMPLING = GenerationConfig(temperature=1.0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0)


def _target(model):
    chain = SAMPLING.sampler(model)
    chain.remove(-1)
    return TokenDistribution(chain, model.vocab.n_tokens)


def _chi2_p(a: list, b: list) -> float:
    cats = sorted(set(a) | set(b), key=str)
    table = np.array([[a.count(c) for c in cats], [b.count(c) for c in cats]])
    rare = table.sum(axis=0) < 10  # pool rare outcomes so every expected count is large enough
    table = np.column_stack([table[:, ~rare], table[:, rare].sum(axis=1)]) if rare.any() else table
    return float(chi2_contingency(table[:, table.sum(axis=0) > 0]).pvalue)


def test_speculative_sampling_of_a_fixed_draft_matches_plain_sampling(model, verify_batch):
    """An n-gram draft (q = 1 on the drafted token): the joint distribution of the tokens at the two
    verified positions equals that of llama.cpp's own sampler chain drawing them one by one."""
    ctx, (d1, d2) = verify_batch
    target = _target(model)
    (p0_ids, p0), (p1_ids, p1) = target(ctx, 0), target(ctx, 1)
    rng = np.random.default_rng(1)
    n = 3000
    ours = []
    for _ in range(n):
        t0 = speculative_sample(p0_ids, p0, d1, None, None, rng)
        ours.append((t0, speculative_sample(p1_ids, p1, d2, None, None, rng) if t0 == d1 else None))
    plain_chain = SAMPLING.replace(seed=7).sampler(model)
    plain = []
    for _ in range(n):
        t0 = plain_chain.sample(ctx, 0)
        plain.append((t0, plain_chain.sample(ctx, 1) if t0 == d1 else None))
    accepted = sum(t == d1 for t, _ in ours)
    assert 0.05 * n < accepted < 0.95 * n  # both the accept and the residual paths were taken
    assert _chi2_p(ours, plain) > 0.01


def test_speculative_sampling_of_a_drawn_draft_matches_plain_sampling(model, verify_batch):
    """A draft model's token drawn from its own distribution q (here: hotter than the target's):
    accepting with min(1, p/q) and resampling from the residual gives back p."""
    ctx, _ = verify_batch
    p_ids, p = _target(model)(ctx, 0)
    hot = SAMPLING.replace(temperature=1.8, top_p=1.0, min_p=0.0).sampler(model)
    hot.remove(-1)
    q_ids, q = TokenDistribution(hot, model.vocab.n_tokens)(ctx, 0)
    rng = np.random.default_rng(2)
    n = 3000
    ours = []
    for _ in range(n):
        drafted = int(q_ids[np.searchsorted(np.cumsum(q), rng.random() * q.sum())])
        ours.append(speculative_sample(p_ids, p, drafted, q_ids, q, rng))
    plain_chain = SAMPLING.replace(seed=11).sampler(model)
    plain = [plain_chain.sample(ctx, 0) for _ in range(n)]
    assert _chi2_p(ours, plain) > 0.01


def test_sampling_with_speculation_runs_end_to_end(model_path, qwen_path):
    with LLM(model_path, temperature=1.0, max_tokens=32, n_threads=2, speculative="ngram") as spec:
        text, stats = spec.generate_with_stats(REPETITIVE[0], seed=5)
        assert stats.completion_tokens > 0 and stats.drafted >= stats.accepted
        # each position draws from its own random stream: a seed gives the same text, however the
        # adaptive policy cut the drafts this time
        assert all(spec.generate_with_stats(REPETITIVE[0], seed=5)[0] == text for _ in range(2))
    with LLM(qwen_path, temperature=0.7, max_tokens=24, n_threads=2, draft_model=qwen_path, n_draft=4) as spec:
        text, stats = spec.generate_with_stats(CODE_PROMPT, seed=3)
        assert text and stats.drafted > 0 and stats.accepted > 0


# -- vocabularies, the reference API -------------------------------------------------------------
def test_incompatible_draft_model_is_a_clear_error(qwen_path, model_path):
    with pytest.raises(VocabMismatchError, match="cannot draft for .*vocabulary sizes differ"):
        LLM(qwen_path, draft_model=model_path)
    target = LlamaModel(str(qwen_path), LlamaModelParams())
    draft = LlamaModel(str(model_path), LlamaModelParams())
    params = LlamaContextParams()
    params.n_ctx = 256
    spec = Speculative(LlamaContext(target, params), LlamaContext(draft, params))
    assert not spec.are_compatible()
    with pytest.raises(VocabMismatchError, match="differ"):
        spec.gen_draft(SpeculativeParams(), [1, 2, 3], 3)
    with pytest.raises(ValueError, match="ngram"):
        LLM(model_path, speculative="medusa")
    with pytest.raises(ValueError, match="draft_model"):
        LLM(model_path, speculative="draft")


def test_reference_speculative_example(qwen_path, plain_qwen):
    # the reference's example, with both models the 0.5B
    model_target = LlamaModel(str(qwen_path), LlamaModelParams())
    model_draft = LlamaModel(str(qwen_path), LlamaModelParams())
    ctx_params = LlamaContextParams()
    ctx_params.n_ctx = 2048
    ctx_target = LlamaContext(model_target, ctx_params)
    ctx_draft = LlamaContext(model_draft, ctx_params)
    spec = Speculative(ctx_target, ctx_draft)
    assert spec.are_compatible()
    params = SpeculativeParams(n_draft=16, n_reuse=8, p_min=0.75)
    prompt_tokens = [1, 2, 3]
    last_token = prompt_tokens[-1]
    draft_tokens = spec.gen_draft(params, prompt_tokens, last_token)
    assert isinstance(draft_tokens, list) and len(draft_tokens) <= 16
    # with no confidence threshold the draft is the model's greedy continuation
    vocab = model_target.vocab
    prompt = vocab.tokenize_prompt(CODE_PROMPT)
    expected = _run(plain_qwen, CODE_PROMPT, max_tokens=9)[1]
    assert spec.gen_draft(SpeculativeParams(n_draft=8, p_min=0.0), prompt, expected[0]) == expected[1:9]
    # the draft context keeps its cache: a longer text decodes only what is new
    assert spec.gen_draft(SpeculativeParams(n_draft=4, p_min=0.0), prompt + expected[:4], expected[4]) == \
        expected[5:9]
    with pytest.raises(ValueError, match="p_min"):
        spec.gen_draft(SpeculativeParams(p_min=1.5), prompt, expected[0])


# -- pieces --------------------------------------------------------------------------------------
def test_ngram_drafter_follows_the_text():
    drafter = NgramDrafter()
    assert drafter.draft([1, 2, 3, 4, 5, 1, 2, 3], 4, 4).tokens == [5, 1, 2, 3]
    # the text grew by the accepted tokens: counted incrementally
    assert drafter.draft([1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1], 2, 2).tokens == [3, 4]
    # a different text (a new prompt) is counted afresh
    assert drafter.draft([7, 8, 9, 7, 8], 9, 3).tokens == [7, 8, 9]
    assert drafter.draft([7, 8, 9, 7, 8], 9, 0).tokens == []


def test_prompt_lookup_copies_after_the_longest_match():
    lookup = PromptLookup(min_match=3)
    # "9 1 2 3 | 4 ..." and "8 1 2 3 | 5 ...": the text ends "9 1 2 3", so the first occurrence agrees longest
    lookup.extend([9, 1, 2, 3, 4, 4, 4, 8, 1, 2, 3, 5, 5, 0, 9, 1, 2, 3])
    assert lookup.match() == (4, 4)
    assert lookup.draft(5) == [4, 4, 4, 8, 1] and lookup.draft(0) == []
    # equal agreement: the most recent occurrence wins
    lookup.reset()
    lookup.extend([7, 1, 2, 3, 4, 7, 1, 2, 3, 5, 7, 1, 2, 3])
    assert lookup.match() == (4, 9) and lookup.draft(3) == [5, 7, 1]
    # agreement shorter than min_match, or a never seen end: no draft
    lookup.reset()
    lookup.extend([5, 2, 3, 4, 6, 2, 3])
    assert lookup.match() == (0, -1) and lookup.draft(4) == []
    lookup.extend([1])
    assert lookup.draft(4) == []
    with pytest.raises(ValueError, match="min_match"):
        PromptLookup(min_match=1)


def test_ngram_drafter_copies_long_stretches_of_the_prompt():
    code = list(range(100, 160))
    drafter = NgramDrafter()
    # the output started copying the prompt's code: the draft is the rest of it, as long as asked
    history = [1, 2] + code + [3, 4] + code[:10]
    assert drafter.draft(history, code[10], 32).tokens == code[11:43]


def _back_off(policy: DraftLengthPolicy) -> None:
    """Feed a policy steps where drafting costs as much as a plain step and half the drafts fail."""
    assert policy.next() == 0  # a plain step is measured first
    policy.record(0, 0, 0.030)
    k = policy.next()
    assert 0 < k <= policy.n_max
    for _ in range(10):
        policy.record(k, k // 2, 0.030 + 0.030 * k)
        k = policy.next() or k
    assert policy.best_k() == 0


def test_draft_length_policy_backs_off_and_comes_back():
    policy = DraftLengthPolicy(8)
    _back_off(policy)
    ks = [policy.next() for _ in range(200)]
    assert ks.count(0) / len(ks) > 0.95 and any(ks)  # plain decoding, with a short try now and then
    # cheap drafts that are always accepted (repetitive text, n-gram drafts): draft long
    for _ in range(20):
        policy.record(2, 2, 0.031)
    assert policy.best_k() == 8 and policy.next() == 8
    with pytest.raises(ValueError):
        SpeculativeDecoder(NgramDrafter(), 0)


def test_draft_model_policy_stays_off_between_retries():
    policy = DraftLengthPolicy(8, catch_up=True)
    assert policy.new_generation()
    _back_off(policy)
    assert not any(policy.next() for _ in range(500))  # no tries: each would re-read the text
    starts = [policy.new_generation() for _ in range(DraftLengthPolicy.RETRY_GENERATIONS)]
    assert starts == [False] * (DraftLengthPolicy.RETRY_GENERATIONS - 1) + [True]
    assert policy.next() == 2 and policy.next() == 0  # one short try in the retry generation


# -- command line ----------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llamapy.cli", *args], capture_output=True, text=True)


def test_cli_flags(model_path, qwen_path):
    base = ["complete", REPETITIVE[1], "-m", str(model_path), "-t", "0", "-n", "24"]
    plain = _cli(*base)
    spec = _cli(*base, "--speculative", "ngram", "--n-draft", "8", "--stats")
    assert plain.returncode == 0 and spec.returncode == 0, spec.stderr
    assert spec.stdout == plain.stdout and "speculation:" in spec.stderr and "accepted" in spec.stderr
    qbase = ["complete", CODE_PROMPT, "-m", str(qwen_path), "-t", "0", "-n", "12"]
    drafted = _cli(*qbase, "--draft-model", str(qwen_path), "--stats")
    assert drafted.returncode == 0 and drafted.stdout == _cli(*qbase).stdout, drafted.stderr
    bad = _cli(*qbase, "--draft-model", str(model_path))
    assert bad.returncode != 0 and "cannot draft" in bad.stderr and "Traceback" not in bad.stderr

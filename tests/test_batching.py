"""Continuous batching: identical greedy output, per-request settings, shared prefixes, cancel, errors, threads."""
from __future__ import annotations

import threading

import pytest

from llamapy import LLM, BatchGenerator, BatchRequest, PromptTooLongError, batch_generate

PROMPTS = [
    "What is 2+2?", "The capital of France is", "Write a haiku about the sea.", "def fib(n):",
    "List three fruits:", "Once upon a time", "Explain gravity in one sentence.", "Translate 'hello' to Spanish:",
    "1, 2, 3, 4,", "The best way to learn Python is", "Q: Who wrote Hamlet?\nA:",
    "Summarise: " + " ".join(f"Item {i} is a thing that matters." for i in range(40)),
]
SYSTEM = "You are a helpful assistant who answers questions about geography and history briefly. "


@pytest.fixture(scope="module")
def alone(model_path):
    with LLM(model_path, temperature=0, repeat_penalty=1.0, max_tokens=24, n_ctx=2048, n_threads=2) as llm:
        yield llm


@pytest.fixture(scope="module")
def gen(model_path):
    with BatchGenerator(model_path, n_seq_max=4, n_ctx=1024, n_batch=64, temperature=0, repeat_penalty=1.0, max_tokens=24,
                        n_threads=2) as g:
        yield g


def test_greedy_batched_equals_generating_alone(alone, gen):
    expected = [alone(p) for p in PROMPTS]
    responses = gen.generate_responses(PROMPTS)
    assert [r.id for r in responses] == list(range(len(PROMPTS)))
    for p, e, r in zip(PROMPTS, expected, responses):
        assert r.response == e, p
        assert r.prompt == p and r.time_taken > 0 and r.tokens_generated == r.stats.completion_tokens
    assert max(r.stats.prompt_tokens for r in responses) > 64  # a prompt longer than a batch was chunked


def test_per_request_settings(alone, gen):
    requests = [
        BatchRequest("greedy", "The capital of France is"),
        BatchRequest("short", "Once upon a time", max_tokens=5),
        BatchRequest("stop", "1, 2, 3, 4,", stop_sequences=[" 7"]),
        BatchRequest("grammar", "Pick a colour:", grammar='root ::= " " ("red" | "green" | "blue")'),
        BatchRequest("sampled", "Tell me a story.", temperature=1.0, seed=5, max_tokens=12),
    ]
    by_id = {r.id: r for r in gen.generate_responses(requests)}
    assert by_id["greedy"].response == alone("The capital of France is")
    assert by_id["short"].tokens_generated == 5 and by_id["short"].finish_reason == "length"
    assert by_id["stop"].response == alone("1, 2, 3, 4,", stop_sequences=[" 7"])
    assert " 7" not in by_id["stop"].response and by_id["stop"].finish_reason == "stop"
    assert by_id["grammar"].response in (" red", " green", " blue")
    again = gen.generate_responses([BatchRequest("sampled", "Tell me a story.", temperature=1.0, seed=5, max_tokens=12)])
    assert again[0].response == by_id["sampled"].response  # same seed, same text


def test_shared_prefix_is_decoded_once(alone, gen):
    questions = ["What is the capital of Italy?", "Who was Napoleon?", "Where is Peru?", "Name a river in Egypt."]
    prompts = [SYSTEM + q for q in questions]
    responses = gen.generate_responses(prompts)
    assert [r.response for r in responses] == [alone(p) for p in prompts]
    decoded = [r.stats.prompt_tokens_decoded for r in responses]
    total = [r.stats.prompt_tokens for r in responses]
    assert decoded[0] == total[0]
    assert all(d < t - 10 for d, t in zip(decoded[1:], total[1:])), (decoded, total)


def test_cancelling_one_request_leaves_the_others(alone, gen):
    prompts = ["Once upon a time", "The capital of France is", "def fib(n):"]
    seen: dict = {}
    done: dict = {}
    for ev in gen.stream([BatchRequest(i, p, max_tokens=40) for i, p in enumerate(prompts)]):
        seen[ev.id] = seen.get(ev.id, "") + ev.text
        if ev.id == 0 and ev.text and 0 not in done:
            gen.cancel(0)
        if ev.done:
            done[ev.id] = ev.stats
    assert done[0].finish_reason == "cancelled"
    for i in (1, 2):
        assert seen[i] == alone(prompts[i], max_tokens=40)


def test_a_prompt_that_cannot_fit_gets_its_own_error(alone, gen):
    huge = "word " * 3000  # more than a sequence's share of the context
    responses = gen.generate_responses(["The capital of France is", huge, "def fib(n):"])
    assert isinstance(responses[1].error, PromptTooLongError) and responses[1].finish_reason == "error"
    assert responses[0].response == alone("The capital of France is")
    assert responses[2].response == alone("def fib(n):")


def test_submission_from_other_threads(alone, model_path):
    with BatchGenerator(model_path, n_seq_max=4, n_ctx=512, temperature=0, repeat_penalty=1.0, max_tokens=16, n_threads=2) as g:
        g.start()
        futures: dict = {}
        lock = threading.Lock()

        def client(k: int) -> None:
            for j in range(2):
                f = g.submit(BatchRequest((k, j), PROMPTS[(k * 2 + j) % len(PROMPTS)]))
                with lock:
                    futures[(k, j)] = f

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results = {key: f.result() for key, f in futures.items()}
        g.stop()
    assert len(results) == 8
    for (k, j), r in results.items():
        assert r.response == alone(PROMPTS[(k * 2 + j) % len(PROMPTS)], max_tokens=16)


def test_batch_generate_function(model_path, alone):
    out = batch_generate(["The capital of France is", "def fib(n):"], model_path=model_path, max_tokens=24,
                         temperature=0, repeat_penalty=1.0, n_threads=2)
    assert out == [alone("The capital of France is"), alone("def fib(n):")]


COPY = ["Repeat this list exactly: apples, pears, plums, cherries, grapes, lemons, limes, figs, dates, kiwis.\n"
        "apples, pears, plums, cherries, grapes,",
        "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\ndef add(a, b):\n    return",
        "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3,"] + PROMPTS[:3]


def test_ngram_speculation_keeps_greedy_output(model_path):
    """Several sequences speculating at once give the batch generator's plain greedy text, token for
    token; drafts from the prompts are decoded and most are kept."""
    settings = dict(n_seq_max=4, n_ctx=1024, n_batch=128, temperature=0, repeat_penalty=1.0, max_tokens=40,
                    n_threads=2)
    with BatchGenerator(model_path, **settings) as plain:
        expected = [r.response for r in plain.generate_responses(COPY)]
    for n_draft in (3, 16):
        with BatchGenerator(model_path, speculative="ngram", n_draft=n_draft, **settings) as spec:
            responses = spec.generate_responses(COPY)
        assert [r.response for r in responses] == expected, n_draft
        drafted = sum(r.stats.drafted for r in responses)
        accepted = sum(r.stats.accepted for r in responses)
        assert drafted > 0 and accepted > drafted / 2, (drafted, accepted)
        assert all(r.tokens_generated == r.stats.completion_tokens for r in responses)


def test_ngram_speculation_sampling_does_not_depend_on_the_drafts(model_path):
    """At temperature > 0 a seed gives the same text whatever the drafts were (one random stream
    per output position), with logprobs for every token."""
    texts = []
    for n_draft in (1, 16):
        with BatchGenerator(model_path, speculative="ngram", n_draft=n_draft, n_seq_max=2, n_ctx=1024,
                            temperature=0.8, seed=11, max_tokens=32, n_threads=2) as spec:
            rs = spec.generate_responses([BatchRequest(0, COPY[0], config=spec.config.replace(logprobs=0)),
                                          BatchRequest(1, COPY[2])])
        assert len(rs[0].stats.logprobs) == rs[0].stats.completion_tokens
        texts.append([r.response for r in rs])
    assert texts[0] == texts[1]


def test_speculation_settings_are_checked(model_path):
    with pytest.raises(ValueError, match="needs draft_model="):
        BatchGenerator(model_path, speculative="draft")
    with pytest.raises(ValueError, match="n_draft needs"):
        BatchGenerator(model_path, n_draft=4)
    with pytest.raises(ValueError, match="speculative must be"):
        BatchGenerator(model_path, speculative="lookahead")


def test_draft_model_speculation_keeps_greedy_output(model_path):
    """The test model drafting for itself: several sequences drafting at once (a draft context
    each) give the plain batched greedy text token for token, and keep every greedy draft."""
    settings = dict(n_seq_max=4, n_ctx=512, n_batch=128, temperature=0, repeat_penalty=1.0, max_tokens=32,
                    n_threads=2)
    with BatchGenerator(model_path, **settings) as plain:
        expected = [r.response for r in plain.generate_responses(COPY)]
    with BatchGenerator(model_path, draft_model=model_path, n_draft=4, **settings) as spec:
        responses = spec.generate_responses(COPY)
    assert [r.response for r in responses] == expected
    drafted = sum(r.stats.drafted for r in responses)
    assert drafted > 0 and sum(r.stats.accepted for r in responses) == drafted


def test_draft_model_sampling_repeats_with_its_seed(model_path):
    """At temperature > 0 draft-model drafts are verified by speculative sampling; a seed repeats."""
    texts = []
    for _ in range(2):
        with BatchGenerator(model_path, draft_model=model_path, n_draft=4, n_seq_max=2, n_ctx=512, temperature=0.8,
                            seed=5, max_tokens=24, n_threads=2) as spec:
            rs = spec.generate_responses(COPY[:2])
        assert sum(r.stats.drafted for r in rs) > 0 and all(r.stats.completion_tokens > 0 for r in rs)
        texts.append([r.response for r in rs])
    assert texts[0] == texts[1]

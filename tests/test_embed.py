"""Embedder and Reranker on real models, against llama.cpp's own llama-embedding (the oracle).

The reranker is the MiniLM cross-encoder of test_convert_bert, whose classification head has
random weights (no reranker ships on the package index): these tests check the ranking
plumbing (scores computed, shapes, order, batching), not ranking quality.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from llamapy import Embedder, PromptTooLongError, Reranker
from llamapy.embed import EmbeddingError, TruncationWarning
from llamapy.hub.catalog import pull
from test_convert_bert import cross_encoder_gguf, cross_encoder_source, minilm_source  # noqa: F401  (fixtures)

TEXTS = [
    "The weather is lovely today.",
    "It is sunny and warm outside, a perfect afternoon for a walk along the river.",
    "Quantum computers use qubits.",
    "I love pizza!",
    "The committee postponed its decision until the next quarterly meeting, citing incomplete financial data.",
    "Dogs are loyal companions.",
    "A short one.",
    "Machine learning models learn patterns from data, and embeddings capture meaning as vectors.",
]

PAIRS = [  # (sentence, paraphrase); unrelated pairs are the cross combinations
    ("A man is playing a guitar.", "Someone is strumming a guitar."),
    ("The cat sleeps on the sofa.", "A kitten is napping on the couch."),
    ("How do I reset my password?", "What are the steps to change my login password?"),
    ("The stock market fell sharply today.", "Share prices dropped steeply this afternoon."),
    ("She is cooking pasta for dinner.", "A woman prepares spaghetti for the evening meal."),
    ("The train to Paris was delayed.", "Our Paris-bound train arrived late."),
    ("Children are playing football in the park.", "Kids kick a soccer ball around the park."),
    ("It is raining heavily outside.", "There is a downpour outside right now."),
    ("He bought a new laptop yesterday.", "Yesterday he purchased a new notebook computer."),
    ("The doctor prescribed antibiotics.", "The physician gave her a prescription for antibiotics."),
]


@pytest.fixture(scope="module")
def minilm() -> Path:
    return pull("all-minilm-l6-v2", quiet=True)


@pytest.fixture(scope="module")
def emb(minilm):
    with Embedder(minilm) as e:
        yield e


@pytest.fixture(scope="module")
def raw(minilm):
    with Embedder(minilm, normalize=False) as e:
        yield e


@pytest.fixture(scope="module")
def llama_embedding(llama_tools) -> Path:
    return llama_tools / "llama-embedding"


def oracle(exe: Path, model: Path, prompts: list[str], *extra: str) -> np.ndarray:
    """llama-embedding's vectors for the prompts (one per line), from its JSON output."""
    proc = subprocess.run([str(exe), "-m", str(model), "-p", "\n".join(prompts), "--embd-output-format", "json",
                           "-c", "2048", "-b", "2048", "-t", "2", *extra], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout[proc.stdout.index("{"):])["data"]
    return np.array([d["embedding"] for d in sorted(data, key=lambda d: d["index"])], dtype=np.float32)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# -- against llama.cpp's llama-embedding ----------------------------------------------------------
def test_embeddings_equal_llama_embedding(emb, minilm, llama_embedding):
    got = emb.embed(TEXTS)
    want = oracle(llama_embedding, minilm, TEXTS)
    assert got.shape == want.shape == (len(TEXTS), 384) and got.dtype == np.float32
    assert cosines(got, want).min() >= 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_pooling_override_equals_llama_embedding(minilm, llama_embedding):
    with Embedder(minilm, pooling="cls") as e:
        assert e.pooling.name == "CLS"
        got = e.embed(TEXTS)
    assert cosines(got, oracle(llama_embedding, minilm, TEXTS, "--pooling", "cls")).min() >= 0.9999


def test_token_embeddings_equal_llama_embedding(emb, raw, minilm, llama_embedding):
    text = TEXTS[1]
    got = emb.embed_tokens(text)
    want = oracle(llama_embedding, minilm, [text], "--pooling", "none")
    assert got.shape == want.shape == (len(emb.vocab.tokenize(text)), 384)
    assert cosines(got, want).min() >= 0.9999
    # mean pooling is the mean of the token vectors
    assert cosines(raw.embed_tokens(text).mean(0), raw.embed(text)) >= 0.99999


def test_a_decoder_model_embeds_with_last_token_pooling(model_path, llama_embedding):
    """SmolLM2 (Q4_1, causal, f16 KV cache): here the layout of a batch changes the numbers a little
    in llama.cpp itself (llama-embedding batched vs one text at a time: cosine ~0.9996), so the
    oracle gets the texts in the order Embedder packs them (longest first) and alone-vs-batched
    is held to 0.999."""
    with Embedder(model_path, pooling="last") as e:
        got = e.embed(TEXTS)
        alone = np.stack([e.embed([t])[0] for t in TEXTS])
        order = sorted(range(len(TEXTS)), key=lambda i: -len(e.vocab.tokenize(TEXTS[i])))
    assert got.shape == (len(TEXTS), e.n_embd)
    want = oracle(llama_embedding, model_path, [TEXTS[i] for i in order], "--pooling", "last")
    assert cosines(got[order], want).min() >= 0.9999
    assert cosines(got, alone).min() >= 0.999


# -- semantics and batching ----------------------------------------------------------------------
def test_paraphrases_score_higher_than_unrelated_pairs(emb):
    sim = emb.similarity([a for a, _ in PAIRS], [b for _, b in PAIRS])
    assert sim.shape == (10, 10)
    for i in range(10):
        others = np.delete(sim[i], i)
        assert sim[i, i] > others.max(), (PAIRS[i], float(sim[i, i]), float(others.max()))
        assert sim[i, i] > np.delete(sim[:, i], i).max()


def test_batched_equals_one_text_at_a_time(emb):
    rng = np.random.default_rng(5)
    words = " ".join(TEXTS + [a for a, _ in PAIRS]).split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(3, 60)))) for _ in range(64)]
    together = emb.embed(texts)
    alone = np.stack([emb.embed([t])[0] for t in texts])
    assert cosines(together, alone).min() >= 0.99999


def test_packing_is_longest_first_within_the_limits(minilm, emb):
    with Embedder(minilm, n_batch=64, n_seq_max=3) as small:
        assert small.n_seq_max == 2  # lowered to a divisor of n_batch (a llama.cpp constraint)
        groups = small._pack([5, 60, 20, 30, 10, 40, 7])
        got = small.embed(TEXTS)
    assert groups[0][0] == 1  # the longest opens the first decode
    for g in groups:
        assert len(g) <= 2 and sum([5, 60, 20, 30, 10, 40, 7][i] for i in g) <= 64
    assert sorted(i for g in groups for i in g) == list(range(7))
    assert cosines(got, emb.embed(TEXTS)).min() >= 0.99999


def test_similarity_is_the_cosine_matrix(emb):
    a, b = ["I love pizza!", "Dogs are loyal companions."], TEXTS[:3]
    sim = emb.similarity(a, b)
    assert sim.shape == (2, 3)
    assert np.allclose(sim, emb.embed(a) @ emb.embed(b).T, atol=1e-6)
    assert np.allclose(emb.similarity(emb.embed(a), b), sim, atol=1e-6)
    assert emb.similarity("I love pizza!", "I love pizza!")[0, 0] == pytest.approx(1, abs=1e-5)


def test_embed_iter_streams_bounded_chunks(emb):
    texts = [f"sentence number {i} about {TEXTS[i % len(TEXTS)]}" for i in range(100)]
    chunks = list(emb.embed_iter((t for t in texts), chunk_size=40))
    assert [len(c) for c in chunks] == [40, 40, 20]
    assert cosines(np.concatenate(chunks), emb.embed(texts)).min() >= 0.99999
    assert list(emb.embed_iter(iter([]))) == []


def test_long_texts_are_cut_and_flagged_or_refused(minilm, emb):
    long = "word " * 700
    with pytest.warns(TruncationWarning, match="1 of 2 texts"):
        info = emb.embed_with_info([long, "short text"])
    assert info.truncated.tolist() == [True, False]
    assert info.n_tokens[0] == 512 == emb.max_tokens == emb.n_batch  # n_batch defaults to the training context
    assert np.isfinite(info.vectors).all()
    with Embedder(minilm, truncate=False) as strict:
        with pytest.raises(PromptTooLongError, match="text 1 has 702 tokens; at most 512"):
            strict.embed(["fine", long])
    with Embedder(minilm, n_batch=32) as small, warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        assert small.max_tokens == 32 and small.embed_with_info([" ".join(TEXTS)]).n_tokens[0] == 32


# -- bad input --------------------------------------------------------------------------------
def test_bad_input_gets_clear_errors(emb, minilm, model_path, cross_encoder_gguf, tmp_path):  # noqa: F811
    with pytest.raises(EmbeddingError, match="no texts to embed"):
        emb.embed([])
    with pytest.raises(EmbeddingError, match="text 1 is empty"):
        emb.embed(["fine", "  "])
    with pytest.raises(EmbeddingError, match="the text is empty"):
        emb.embed_tokens("")
    with pytest.raises(TypeError, match="text 0 is a int"):
        emb.embed([1])
    with pytest.raises(EmbeddingError, match="not an embedding model.*pooling='last'"):
        Embedder(model_path)
    with pytest.raises(EmbeddingError, match="is a reranker"):
        Embedder(cross_encoder_gguf)
    with pytest.raises(EmbeddingError, match="no ranking head .*mean"):
        Reranker(minilm)
    with pytest.raises(FileNotFoundError):
        Embedder(tmp_path / "missing.gguf")
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        Embedder(minilm, pooling="max")


def test_pooled_context_with_an_uneven_split_is_refused(minilm):
    """llama.cpp aborts creating such a context (found with n_ubatch 64 over 3 sequences): a clear error instead."""
    code = f"""
from llamapy import Context, ContextError, Model
m = Model.from_file({str(minilm)!r})
try:
    Context(m, embeddings=True, n_batch=64, n_ubatch=64, n_seq_max=3)
except ContextError as e:
    print("refused:", e)
print(Context(m, embeddings=True, n_batch=66, n_ubatch=66, n_seq_max=3).n_seq_max)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "refused: pooled embeddings over n_seq_max=3 sequences need n_ubatch (64)" in run.stdout
    assert run.stdout.strip().endswith("3")


# -- reranking ---------------------------------------------------------------------------------
DOCS = ["A man plays a guitar.", "Stocks fell sharply on Monday.", "Someone is performing music on stage.",
        "The recipe needs two eggs.", "Music is played by a band."]


@pytest.fixture(scope="module")
def reranker(cross_encoder_gguf):  # noqa: F811
    with Reranker(cross_encoder_gguf) as r:
        yield r


def test_rerank_sorts_by_score_with_indices(reranker):
    scores = reranker.scores("A man is playing music", DOCS)
    assert scores.shape == (5,) and np.isfinite(scores).all() and np.ptp(scores) > 0
    ranked = reranker.rerank("A man is playing music", DOCS)
    assert [r.index for r in ranked] == np.argsort(-scores, kind="stable").tolist()
    assert [r.document for r in ranked] == [DOCS[r.index] for r in ranked]
    assert [r.score for r in ranked] == sorted(scores.tolist(), reverse=True)
    assert len(reranker.rerank("A man is playing music", DOCS, top_n=2)) == 2


def test_rerank_batched_equals_alone_and_llama_embedding(reranker, cross_encoder_gguf, llama_embedding):  # noqa: F811
    query = "A man is playing music"
    together = reranker.scores(query, DOCS)
    alone = np.array([reranker.scores(query, [d])[0] for d in DOCS])
    # scores are the dot product of a random 384-weight head: float noise of the batch shape shows at ~1e-4
    assert np.allclose(together, alone, atol=2e-3)
    assert np.argsort(together).tolist() == np.argsort(alone).tolist()
    # llama-embedding joins "query<TAB>doc" as [CLS] query [SEP] doc [SEP]; raw output prints the rank score
    proc = subprocess.run([str(llama_embedding), "-m", str(cross_encoder_gguf), "-p", "\n".join(
        f"{query}\t{d}" for d in DOCS), "--embd-output-format", "raw", "--embd-normalize", "-1", "-t", "2"],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    want = [float(line) for line in proc.stdout.split("\n") if line.strip()]
    assert np.allclose(together, want, atol=2e-3)


def test_rerank_bad_input(reranker):
    with pytest.raises(EmbeddingError, match="non-empty list"):
        reranker.scores("query", [])
    with pytest.raises(EmbeddingError, match="the query is empty"):
        reranker.scores("", ["doc"])
    with pytest.raises(EmbeddingError, match="document 1 is empty"):
        reranker.scores("query", ["doc", ""])


# -- command line ------------------------------------------------------------------------------
def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llamapy.cli", "embed", *args], input=stdin, capture_output=True,
                          text=True, env={**os.environ, "LLAMAPY_EMBED_MODEL": ""})


def test_cli_embeds_arguments_as_json_and_lines(emb, minilm):
    proc = run_cli("-m", str(minilm), TEXTS[0], TEXTS[3], "--json")
    assert proc.returncode == 0, proc.stderr
    items = json.loads(proc.stdout)
    assert [i["index"] for i in items] == [0, 1] and items[1]["truncated"] is False
    assert items[0]["n_tokens"] == len(emb.vocab.tokenize(TEXTS[0]))
    want = emb.embed([TEXTS[0], TEXTS[3]])
    assert np.allclose(np.array([i["embedding"] for i in items]), want, atol=1e-6)
    proc = run_cli("-m", str(minilm), stdin="\n".join(TEXTS[:3]) + "\n")
    assert proc.returncode == 0, proc.stderr
    rows = np.array([[float(x) for x in line.split()] for line in proc.stdout.splitlines()])
    assert rows.shape == (3, 384) and np.allclose(rows, emb.embed(TEXTS[:3]), atol=1e-6)


def test_cli_errors_are_one_line(minilm, model_path):
    for args, stdin, message in [((TEXTS[0], "-m", str(model_path)), None, "not an embedding model"),
                                 (("-m", str(minilm)), "fine\n\nalso fine\n", "text 1 is empty")]:
        proc = run_cli(*args, stdin=stdin)
        assert proc.returncode == 1
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1

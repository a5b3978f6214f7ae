"""Embeddings and reranking at llama.cpp's batched speed: many texts per decode.

Texts are tokenized, sorted longest first and packed as separate sequences into each decode
(up to ``n_batch`` tokens and ``n_seq_max`` sequences); llama.cpp pools each sequence with
the model's pooling type (mean, cls, last, rank) or one given here. Texts too long for one
sequence are truncated (and flagged) or refused. :meth:`Embedder.embed_iter` takes
any iterable and yields one array per chunk, so memory stays bounded for millions of texts.
"""
from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from itertools import islice
from typing import Iterable, Iterator, Sequence

import numpy as np

from .batch import Batch
from .context import Context
from .enums import PoolingType
from .errors import LlamaError, PromptTooLongError
from .model import Model

DEFAULT_BATCH = 2048  # tokens per decode, at most (default: the model's training context if smaller)
DEFAULT_SEQS = 256  # sequences per decode (llama.cpp's maximum)
CHUNK = 4096  # texts tokenized and packed together by embed_iter


class EmbeddingError(LlamaError, ValueError):
    """The model cannot embed/rerank as asked, or the input is unusable (no texts, an empty text)."""


class TruncationWarning(UserWarning):
    """Some texts were longer than a sequence may be and were cut."""


@dataclass(frozen=True)
class Embeddings:
    """Vectors with what happened to each text: tokens used and whether it was cut."""

    vectors: np.ndarray  # (n, dim) float32
    n_tokens: np.ndarray  # (n,) tokens embedded per text
    truncated: np.ndarray  # (n,) bool


@dataclass(frozen=True)
class RerankResult:
    """One document's relevance to the query (higher is more relevant)."""

    index: int
    score: float
    document: str


def _pooling_name(p: PoolingType) -> str:
    return p.name.lower()


class _PooledModel:
    """A model with an embeddings context, packing token sequences into decodes."""

    def __init__(self, model: str | os.PathLike | Model, pooling: str | PoolingType | None, n_batch: int | None,
                 n_seq_max: int, n_threads: int | None, n_gpu_layers: int | None, truncate: bool):
        if (n_batch is not None and n_batch < 1) or not 1 <= n_seq_max <= DEFAULT_SEQS:
            raise ValueError(f"n_batch must be >= 1 and n_seq_max 1..{DEFAULT_SEQS}")
        self._owns_model = not isinstance(model, Model)
        load = {} if n_gpu_layers is None else {"n_gpu_layers": n_gpu_layers}
        self.model = Model.from_file(model, **load) if self._owns_model else model
        try:
            self.pooling = self._resolve_pooling(pooling)
            self.vocab = self.model.vocab
            self.truncate = truncate
            n_train = self.model.n_ctx_train
            # no decode needs more tokens than the longest text may have: smaller decodes waste less
            # attention across the sequences packed together
            self.n_batch = n_batch = n_batch or (min(DEFAULT_BATCH, n_train) if n_train > 0 else DEFAULT_BATCH)
            # llama.cpp reserves the graph for n_ubatch tokens rounded up to a multiple of n_seq_max;
            # with every token an output, a rounded count fails an assertion in ggml (an abort)
            self.n_seq_max = max(d for d in range(1, min(n_seq_max, n_batch) + 1) if n_batch % d == 0)
            self.n_threads = n_threads
            self.max_tokens = min(n_batch, n_train) if n_train > 0 else n_batch
            self._ctx = self._new_context(self.pooling)
            self._batch = Batch(n_batch)
            self._lock = threading.Lock()
        except BaseException:
            self.close()
            raise

    def _new_context(self, pooling: PoolingType) -> Context:
        # one ubatch per decode: a non-causal model must see each whole sequence at once
        return Context(self.model, n_ctx=self.n_batch, n_batch=self.n_batch, n_ubatch=self.n_batch,
                       n_seq_max=self.n_seq_max, n_threads=self.n_threads, embeddings=True,
                       pooling_type=int(pooling), kv_unified=True)

    def _model_pooling(self) -> PoolingType | None:
        """The pooling type the GGUF declares, None for a model that declares none (a generative LLM)."""
        arch = self.model.meta("general.architecture")
        value = self.model.meta(f"{arch}.pooling_type") if arch else None
        return PoolingType(int(value)) if value is not None and value.lstrip("-").isdigit() else None

    def _resolve_pooling(self, pooling: str | PoolingType | None) -> PoolingType:
        m = self.model
        if m.has_encoder and m.has_decoder:
            raise EmbeddingError(f"{m.path.name} is an encoder-decoder model; llama.cpp embeds with encoder-only "
                                 f"or decoder-only models")
        if pooling is None:
            found = self._model_pooling()
            if found is None or found == PoolingType.UNSPECIFIED:
                raise EmbeddingError(
                    f"{m.path.name} is not an embedding model: its GGUF declares no pooling type. To embed with "
                    f"it anyway pass pooling='last' (as embedding-tuned LLMs use) or pooling='mean'")
            return found
        if isinstance(pooling, str):
            try:
                return PoolingType[pooling.upper()]
            except KeyError:
                raise ValueError(f"unknown pooling {pooling!r}; choose from mean, cls, last, rank, none") from None
        return PoolingType(pooling)

    # -- tokens ------------------------------------------------------------------------
    @staticmethod
    def _check_text(what: str, text: object) -> str:
        if not isinstance(text, str):
            raise TypeError(f"{what} is a {type(text).__name__}, not a str")
        if not text.strip():
            raise EmbeddingError(f"{what} is empty: there is nothing to embed")
        return text

    def _fit(self, i: int, tokens: list[int]) -> tuple[list[int], bool]:
        """Tokens cut to a sequence's limit (keeping a trailing SEP/EOS the tokenizer added)."""
        limit = self.max_tokens
        if len(tokens) <= limit:
            return tokens, False
        if not self.truncate:
            raise PromptTooLongError(f"text {i} has {len(tokens)} tokens; at most {limit} fit in one sequence "
                                     f"(truncate=True cuts it, a larger n_batch allows more up to the model's "
                                     f"{self.model.n_ctx_train})")
        v = self.vocab
        keep_end = v.add_sep or v.add_eos
        return (tokens[:limit - 1] + tokens[-1:]) if keep_end else tokens[:limit], True

    # -- decoding ----------------------------------------------------------------------
    def _pack(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped into decodes: longest first, each into the first decode with room."""
        groups: list[list[int]] = []
        room: list[int] = []
        for i in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
            n = lengths[i]
            for g, free in enumerate(room):
                if n <= free and len(groups[g]) < self.n_seq_max:
                    groups[g].append(i)
                    room[g] -= n
                    break
            else:
                groups.append([i])
                room.append(self.n_batch - n)
        return groups

    def _pooled(self, seqs: Sequence[list[int]], width: int) -> np.ndarray:
        """One pooled vector (``width`` floats) per token sequence, in input order."""
        out = np.empty((len(seqs), width), dtype=np.float32)
        ctx, batch = self._ctx, self._batch
        with self._lock:
            for group in self._pack([len(s) for s in seqs]):
                batch.clear()
                for s, i in enumerate(group):
                    batch.add_sequence(seqs[i], 0, s, "all")
                ctx.memory.clear()
                ctx.decode(batch)
                for s, i in enumerate(group):
                    out[i] = ctx.sequence_embeddings(s)[:width]
        return out

    def close(self) -> None:
        for name in ("_ctx", "_tokens_ctx", "_batch"):
            obj = getattr(self, name, None)
            if obj is not None:
                obj.close()
        if self._owns_model:
            self.model.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _l2(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


class Embedder(_PooledModel):
    """Text embeddings from a GGUF embedding model (or any decoder LLM with ``pooling='last'``).

    ``pooling`` overrides the model's pooling type (mean, cls, last; none only for
    :meth:`embed_tokens`). ``normalize`` L2-normalises the vectors. Texts longer than
    ``max_tokens`` (the smaller of ``n_batch`` and the model's training context) are cut,
    keeping the trailing separator, unless ``truncate=False``, which raises instead.
    ``n_seq_max`` (sequences per decode) is lowered to a divisor of ``n_batch`` where needed.
    """

    def __init__(self, model: str | os.PathLike | Model, *, pooling: str | PoolingType | None = None,
                 normalize: bool = True, truncate: bool = True, n_batch: int | None = None,
                 n_seq_max: int = DEFAULT_SEQS, n_threads: int | None = None, n_gpu_layers: int | None = None):
        super().__init__(model, pooling, n_batch, n_seq_max, n_threads, n_gpu_layers, truncate)
        if self.pooling == PoolingType.RANK:
            self.close()
            raise EmbeddingError(f"{self.model.path.name} is a reranker (rank pooling): use Reranker")
        self.normalize = normalize
        self.n_embd = self.model.n_embd_out
        self._tokens_ctx: Context | None = None

    def embed(self, texts: str | Sequence[str]) -> np.ndarray:
        """Embed texts: float32 array (n, dim); a single str gives one vector (dim,)."""
        if isinstance(texts, str):
            return self.embed_with_info([texts]).vectors[0]
        return self.embed_with_info(texts).vectors

    def embed_with_info(self, texts: Sequence[str]) -> Embeddings:
        """Embed texts and say, per text, how many tokens were used and whether it was cut."""
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            raise EmbeddingError("no texts to embed (an empty list)")
        return self._embed_chunk(list(texts), 0)

    def embed_iter(self, texts: Iterable[str], chunk_size: int = CHUNK,
                   info: bool = False) -> Iterator[np.ndarray] | Iterator[Embeddings]:
        """Embed any number of texts with bounded memory: yields (k, dim) arrays of up to
        ``chunk_size`` texts each, in input order (:class:`Embeddings` with ``info=True``)."""
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        it, start = iter(texts), 0
        while chunk := list(islice(it, chunk_size)):
            result = self._embed_chunk(chunk, start)
            yield result if info else result.vectors
            start += len(chunk)

    def _embed_chunk(self, texts: list[str], start: int) -> Embeddings:
        if self.pooling == PoolingType.NONE:
            raise EmbeddingError("this Embedder has pooling 'none': use embed_tokens() for per-token vectors, "
                                 "or choose a pooling type (mean, cls, last)")
        seqs, cut = [], []
        for i, text in enumerate(texts, start):
            tokens, was_cut = self._fit(i, self.vocab.tokenize(self._check_text(f"text {i}", text)))
            seqs.append(tokens)
            cut.append(was_cut)
        if any(cut):
            warnings.warn(f"{sum(cut)} of {len(texts)} texts were longer than {self.max_tokens} tokens and were cut",
                          TruncationWarning, stacklevel=3)
        vectors = self._pooled(seqs, self.n_embd)
        return Embeddings(_l2(vectors) if self.normalize else vectors,
                          np.array([len(s) for s in seqs]), np.array(cut, dtype=bool))

    def embed_tokens(self, text: str) -> np.ndarray:
        """Per-token embeddings of one text (no pooling): float32 array (n_tokens, dim)."""
        tokens, _ = self._fit(0, self.vocab.tokenize(self._check_text("the text", text)))
        with self._lock:
            if self._tokens_ctx is None:
                self._tokens_ctx = self._new_context(PoolingType.NONE)
            ctx, batch = self._tokens_ctx, self._batch
            batch.clear()
            batch.add_sequence(tokens, 0, 0, "all")
            ctx.memory.clear()
            ctx.decode(batch)
            vectors = np.stack([ctx.embeddings(i) for i in range(len(tokens))])
        return _l2(vectors) if self.normalize else vectors

    def similarity(self, a: str | Sequence[str] | np.ndarray, b: str | Sequence[str] | np.ndarray) -> np.ndarray:
        """Cosine similarity matrix (len(a), len(b)) of texts or of vectors already embedded."""
        va, vb = (_l2(np.atleast_2d(self._vectors(x))) for x in (a, b))
        return va @ vb.T

    def _vectors(self, x: str | Sequence[str] | np.ndarray) -> np.ndarray:
        if isinstance(x, np.ndarray):
            return x.astype(np.float32, copy=False)
        return self.embed([x] if isinstance(x, str) else x)

    def __repr__(self) -> str:
        return f"<Embedder {self.model.path.name} pooling={_pooling_name(self.pooling)} dim={self.n_embd}>"


class Reranker(_PooledModel):
    """Relevance scores of query-document pairs from a reranker GGUF (rank pooling: a
    cross-encoder's classification head). Scores are the head's raw outputs."""

    def __init__(self, model: str | os.PathLike | Model, *, truncate: bool = True, n_batch: int | None = None,
                 n_seq_max: int = DEFAULT_SEQS, n_threads: int | None = None, n_gpu_layers: int | None = None):
        super().__init__(model, None, n_batch, n_seq_max, n_threads, n_gpu_layers, truncate)
        if self.pooling != PoolingType.RANK:
            name = self.model.path.name
            self.close()
            raise EmbeddingError(f"{name} has no ranking head (its pooling is {_pooling_name(self.pooling)}): "
                                 f"Reranker needs a reranker / cross-encoder GGUF with rank pooling")
        self._template = self.model.chat_template("rerank")

    def scores(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """The score of each document for the query, in input order (float32, shape (n,))."""
        self._check_text("the query", query)
        if isinstance(documents, str) or len(documents) == 0:
            raise EmbeddingError("give the documents as a non-empty list of strings")
        seqs = [self._pair(query, self._check_text(f"document {i}", d), i) for i, d in enumerate(documents)]
        return self._pooled(seqs, 1)[:, 0]

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[RerankResult]:
        """Documents sorted by score, best first (the ``top_n`` best when given), with their indices."""
        s = self.scores(query, documents)
        order = np.argsort(-s, kind="stable")[:top_n]
        return [RerankResult(int(i), float(s[i]), documents[i]) for i in order]

    def _pair(self, query: str, doc: str, i: int) -> list[int]:
        """Tokens of one query-document pair: the model's rerank template when it has one,
        else [BOS] query [EOS] [SEP] document [EOS] [SEP] as its tokenizer adds them."""
        v = self.vocab
        if self._template is not None:
            text = self._template.replace("{query}", query).replace("{document}", doc)
            return self._fit(i, v.tokenize(text, add_special=True, parse_special=True))[0]
        q = v.tokenize(query, add_special=False)
        d = v.tokenize(doc, add_special=False)
        end = ([v.eos] if v.add_eos and v.eos is not None else []) + ([v.sep] if v.add_sep and v.sep is not None
                                                                       else [])
        head = ([v.bos] if v.add_bos and v.bos is not None else []) + q + end
        room = self.max_tokens - len(head) - len(end)
        if room < 1:
            raise PromptTooLongError(f"the query has {len(q)} tokens: no room is left for a document in "
                                     f"{self.max_tokens} tokens")
        if len(d) > room:
            if not self.truncate:
                raise PromptTooLongError(f"document {i} has {len(d)} tokens; {room} fit beside the query "
                                         f"(truncate=True cuts it)")
            d = d[:room]
        return head + d + end

    def __repr__(self) -> str:
        return f"<Reranker {self.model.path.name}>"


__all__ = ["Embedder", "Reranker", "Embeddings", "RerankResult", "EmbeddingError", "TruncationWarning"]

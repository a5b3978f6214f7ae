"""NgramCache: which tokens followed each short n-gram, for lookup (n-gram) speculative decoding.

A cache maps n-grams of 1..4 tokens to how often each token came next. Drafting extends a
token sequence one token at a time with the most frequent continuation of its longest known
n-gram, as long as that continuation is common enough to be worth verifying. Three caches
play together as in llama.cpp's lookup decoding: the *context* cache (the text at hand,
lax thresholds), a *dynamic* cache (earlier generations, strict thresholds) and a *static*
cache of 2-grams from a large corpus, which breaks ties between candidates.

Files use llama.cpp's layout (``llama-lookup-create`` / ``llama-lookup-merge`` files load
here and the other way round): per n-gram, four int32 token ids (-1 padded), an int32 count
of continuations, then (token, count) int32 pairs, all little-endian.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import LlamaError

NGRAM_MAX = 4  # longest n-gram a cache (and its file) holds
STATIC_NGRAM = 2  # static caches are keyed by 2-grams
_NO_TOKEN = -1

# Early stop of a draft, per n-gram length 1..4: (minimum times seen, minimum share in percent
# of the most frequent continuation). The context cache is trusted more than the dynamic one.
_LAX = ((2, 66), (2, 50), (1, 50), (1, 50))
_STRICT = ((4, 75), (3, 66), (2, 66), (2, 66))
_STATIC = _LAX[STATIC_NGRAM - 1]


class NgramCacheError(LlamaError, ValueError):
    """An n-gram cache file is corrupt or is not an n-gram cache."""


def check_ngram_sizes(ngram_min: int, ngram_max: int) -> None:
    """Raise ValueError unless 1 <= ngram_min <= ngram_max <= NGRAM_MAX."""
    if not 1 <= ngram_min <= ngram_max <= NGRAM_MAX:
        raise ValueError(f"n-gram sizes must satisfy 1 <= ngram_min <= ngram_max <= {NGRAM_MAX}, "
                         f"got {ngram_min}..{ngram_max}")


class NgramCache:
    """Counts of the tokens that followed each n-gram (1..4 tokens) in the text it was fed."""

    def __init__(self) -> None:
        self._counts: dict[tuple[int, ...], dict[int, int]] = {}

    # -- building ----------------------------------------------------------------------
    def update(self, tokens: Sequence[int] | np.ndarray, ngram_min: int = 1, ngram_max: int = NGRAM_MAX,
               n_new: int | None = None) -> None:
        """Count the n-grams (``ngram_min``..``ngram_max`` tokens) of ``tokens`` and what followed them.

        ``n_new`` counts only continuations among the last ``n_new`` tokens: for a sequence that
        grows, pass the whole sequence and the number of tokens appended since the last call.
        """
        check_ngram_sizes(ngram_min, ngram_max)
        toks = [int(t) for t in tokens]
        if any(t < 0 for t in toks):
            raise ValueError("token ids must be >= 0")
        n = len(toks)
        first_new = n - (n if n_new is None else max(0, min(n_new, n)))
        counts = self._counts
        for size in range(ngram_min, ngram_max + 1):
            for i in range(max(first_new, size), n):
                key = tuple(toks[i - size:i])
                part = counts.get(key)
                if part is None:
                    counts[key] = {toks[i]: 1}
                else:
                    part[toks[i]] = part.get(toks[i], 0) + 1

    def merge(self, other: NgramCache) -> None:
        """Add the counts of another cache to this one."""
        for key, part in other._counts.items():
            mine = self._counts.setdefault(key, {})
            for tok, c in part.items():
                mine[tok] = mine.get(tok, 0) + c

    def clear(self) -> None:
        self._counts.clear()

    # -- reading -----------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of distinct n-grams."""
        return len(self._counts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NgramCache) and self._counts == other._counts

    def counts(self, ngram: Iterable[int]) -> dict[int, int]:
        """How often each token followed ``ngram`` (a copy; empty if never seen)."""
        return dict(self._counts.get(tuple(int(t) for t in ngram), {}))

    def draft(self, tokens: Sequence[int] | np.ndarray, n_draft: int = 16, ngram_min: int = 1,
              ngram_max: int = NGRAM_MAX, *, dynamic: NgramCache | None = None,
              static: NgramCache | None = None) -> list[int]:
        """Up to ``n_draft`` tokens likely to follow ``tokens``, from this (context) cache.

        Each step takes the longest n-gram ending the text so far whose most frequent
        continuation is common enough; if this cache has none, ``dynamic`` is asked with
        stricter thresholds, then ``static`` (2-grams). ``static`` also weighs the candidates
        of the other two. Drafting stops at the first step no cache can answer.
        """
        check_ngram_sizes(ngram_min, ngram_max)
        if n_draft < 0:
            raise ValueError("n_draft must be >= 0")
        tail = [int(t) for t in tokens[-NGRAM_MAX:]]
        if len(tail) < STATIC_NGRAM:
            return []
        out: list[int] = []
        while len(out) < n_draft:
            weights = static._counts.get(tuple(tail[-STATIC_NGRAM:]), {}) if static is not None else {}
            tok = _pick(self._counts, tail, ngram_min, ngram_max, weights, _LAX)
            if tok is None and dynamic is not None:
                tok = _pick(dynamic._counts, tail, ngram_min, ngram_max, weights, _STRICT)
            if tok is None and weights:
                tok = _best_static(weights)
            if tok is None:
                break
            out.append(tok)
            tail.append(tok)
            del tail[0]
        return out

    # -- files -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the counts in llama.cpp's lookup-cache layout."""
        words: list[int] = []
        for key, part in self._counts.items():
            words.extend(key)
            words.extend([_NO_TOKEN] * (NGRAM_MAX - len(key)))
            words.append(len(part))
            for tok, c in part.items():
                words.append(tok)
                words.append(c)
        Path(path).write_bytes(np.asarray(words, dtype="<i4").tobytes())

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> NgramCache:
        """Load a cache written by :meth:`save` (or by llama.cpp's lookup tools)."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"n-gram cache file not found: {p}")
        data = p.read_bytes()
        if len(data) % 4:
            raise NgramCacheError(f"{p} is not an n-gram cache: its size ({len(data)} bytes) is not a whole "
                                  f"number of 32-bit words")
        words = np.frombuffer(data, dtype="<i4").tolist()
        self = cls()
        counts = self._counts
        i, n = 0, len(words)
        while i < n:
            where = f"{p} is not a valid n-gram cache (record at byte {4 * i})"
            if i + NGRAM_MAX + 1 > n:
                raise NgramCacheError(f"{where}: the file ends inside the record")
            key = words[i:i + NGRAM_MAX]
            size = NGRAM_MAX - key.count(_NO_TOKEN)
            if size == 0 or any(t < 0 for t in key[:size]) or any(t != _NO_TOKEN for t in key[size:]):
                raise NgramCacheError(f"{where}: bad n-gram token ids {key}")
            n_cont = words[i + NGRAM_MAX]
            i += NGRAM_MAX + 1
            if n_cont <= 0 or i + 2 * n_cont > n:
                raise NgramCacheError(f"{where}: bad continuation count {n_cont}")
            toks, cnts = words[i:i + 2 * n_cont:2], words[i + 1:i + 2 * n_cont:2]
            i += 2 * n_cont
            if min(toks) < 0 or min(cnts) <= 0:
                raise NgramCacheError(f"{where}: negative token id or non-positive count")
            part = counts.setdefault(tuple(key[:size]), {})
            for tok, c in zip(toks, cnts):
                part[tok] = part.get(tok, 0) + c
        return self

    def __repr__(self) -> str:
        return f"<NgramCache {len(self)} n-grams>"


def _pick(counts: dict[tuple[int, ...], dict[int, int]], tail: list[int], ngram_min: int, ngram_max: int,
          weights: dict[int, int], thresholds: tuple[tuple[int, int], ...]) -> int | None:
    """The continuation of the longest n-gram ending ``tail`` that passes the thresholds."""
    for size in range(min(ngram_max, len(tail)), ngram_min - 1, -1):
        part = counts.get(tuple(tail[-size:]))
        if not part:
            continue
        best, best_score, best_count, total = None, 0, 0, 0
        for tok, c in part.items():
            score = c * (100 * weights[tok] if tok in weights else 1)
            if score > best_score:
                best, best_score, best_count = tok, score, c
            total += c
        min_seen, min_percent = thresholds[size - 1]
        if total >= min_seen and 100 * best_count >= min_percent * total:
            return best
    return None


def _best_static(weights: dict[int, int]) -> int | None:
    total = sum(weights.values())
    tok, c = max(weights.items(), key=lambda kv: kv[1])
    min_seen, min_percent = _STATIC
    return tok if total >= min_seen and 100 * c >= min_percent * total else None


__all__ = ["NgramCache", "NgramCacheError", "NGRAM_MAX"]

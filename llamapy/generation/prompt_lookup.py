"""PromptLookup: drafts by copying what followed the longest earlier match of the text's end.

Input-grounded generation (editing code, quoting a document, filling a template) repeats long
stretches of the prompt. Where the last tokens of the text occurred before, the tokens that
followed them then are a draft that is often right for many tokens in a row. Unlike the n-gram
cache (one token at a time from counts of n-grams up to 4 tokens), this follows a single
earlier occurrence, chosen by the longest agreement with the text's end, for as long as the
draft may be, so a copied block is verified in a few long batches.
"""
from __future__ import annotations

from typing import Sequence

KEY = 2  # tokens that index an occurrence; a match must agree on at least these
MATCH_MAX = 64  # agreement is measured up to this many tokens back
CANDIDATES = 32  # most recent occurrences of the key that are compared


class PromptLookup:
    """An index of the text so far (prompt and output) and the copy-drafts it gives.

    Feed tokens with :meth:`extend` as the text grows (or :meth:`reset` when it changes);
    :meth:`draft` returns the continuation of the best earlier match of the text's end.
    """

    def __init__(self, min_match: int = 3) -> None:
        if min_match < KEY:
            raise ValueError(f"min_match must be >= {KEY}, got {min_match}")
        self.min_match = min_match
        self.tokens: list[int] = []
        self._where: dict[tuple[int, ...], list[int]] = {}  # key -> start positions, oldest first

    def reset(self) -> None:
        self.tokens = []
        self._where.clear()

    def extend(self, tokens: Sequence[int]) -> None:
        """Append tokens to the indexed text."""
        toks = self.tokens
        where = self._where
        for t in tokens:
            toks.append(int(t))
            i = len(toks) - KEY
            if i >= 0:
                where.setdefault(tuple(toks[i:]), []).append(i)

    def match(self) -> tuple[int, int]:
        """(length, position after it) of the longest earlier occurrence of the text's end.

        Ties go to the most recent occurrence. (0, -1) when the last KEY tokens never occurred
        before or agreement is shorter than ``min_match``.
        """
        toks = self.tokens
        n = len(toks)
        if n <= KEY:
            return 0, -1
        starts = self._where.get(tuple(toks[n - KEY:]), ())
        best_len, best_end = 0, -1
        for s in reversed(starts[-CANDIDATES - 1:]):
            end = s + KEY
            if end >= n:
                continue  # the text's end itself
            length = KEY
            while length < MATCH_MAX and s - (length - KEY) - 1 >= 0 \
                    and toks[s - (length - KEY) - 1] == toks[n - length - 1]:
                length += 1
            if length > best_len:
                best_len, best_end = length, end
        if best_len < self.min_match:
            return 0, -1
        return best_len, best_end

    def draft(self, n_max: int) -> list[int]:
        """Up to ``n_max`` tokens that followed the best earlier match (empty if none)."""
        if n_max <= 0:
            return []
        length, end = self.match()
        if end < 0:
            return []
        return self.tokens[end:end + n_max]


__all__ = ["PromptLookup"]

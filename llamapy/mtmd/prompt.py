"""MediaPrompt: a generation prompt holding media, tokenized, with a cache key per position.

Prefix reuse compares the keys of a new prompt with those of what the context holds: text
positions are keyed by their token id, media positions by the media's content hash (as
llama-server does), so a chat history that repeats the same image keeps it in the cache.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Sequence

from ..context import Context
from .chunks import ChunkType, InputChunks
from .context import MtmdContext

_KEY_SPACE = 2**62


def _media_keys(media_id: str, n: int) -> list[int]:
    """``n`` negative keys (never a token id) derived from a media id."""
    base = int(hashlib.sha256(media_id.encode()).hexdigest()[:15], 16)
    return [-1 - ((base + i) % _KEY_SPACE) for i in range(n)]


class MediaPrompt:
    """``text`` with one media marker per item of ``media``, split into chunks.

    ``len()`` is the number of KV-cache cells it fills (known before anything is decoded);
    ``keys`` has one entry per position it advances.
    """

    def __init__(self, mctx: MtmdContext, text: str, media: Sequence[Any], add_special: bool = True,
                 parse_special: bool = True):
        self.mctx = mctx
        self.chunks: InputChunks = mctx.tokenize(text, media, add_special, parse_special)
        self.spans: list[tuple[int, int, Any]] = []  # (first position, n_pos, chunk)
        self.keys: list[int] = []
        for chunk in self.chunks:
            n_pos = chunk.n_pos
            self.spans.append((len(self.keys), n_pos, chunk))
            if chunk.type == ChunkType.TEXT:
                self.keys.extend(chunk.tokens)
            else:
                self.keys.extend(_media_keys(chunk.id or f"anonymous:{id(chunk)}", n_pos))

    def __len__(self) -> int:
        return self.chunks.n_tokens

    @property
    def n_pos(self) -> int:
        return len(self.keys)

    @property
    def n_media_tokens(self) -> int:
        return self.chunks.n_media_tokens

    def span_at(self, pos: int) -> tuple[int, int, Any]:
        """(first position, n_pos, chunk) of the chunk holding position ``pos``."""
        for span in self.spans:
            if span[0] <= pos < span[0] + span[1]:
                return span
        raise IndexError(f"position {pos} is past the prompt ({self.n_pos} positions)")

    @property
    def ends_with_text(self) -> bool:
        return bool(self.spans) and self.spans[-1][2].type == ChunkType.TEXT

    def resume_point(self, keep: int) -> int:
        """The position to resume decoding from, given ``keep`` positions already cached:
        never inside a media item (it is encoded and decoded whole)."""
        for start, n, chunk in self.spans:
            if start <= keep < start + n:
                return start if chunk.type != ChunkType.TEXT else keep
        return keep

    def decode(self, ctx: Context, start: int, seq_id: int, n_batch: int,
               decode_text: Callable[[list[int], int, bool], None]) -> int:
        """Decode everything from position ``start`` (a :meth:`resume_point`) into ``ctx``;
        text goes through ``decode_text(tokens, pos0, logits_last)``, media through libmtmd.
        Returns the number of cells decoded."""
        decoded = 0
        last_index = len(self.spans) - 1
        for i, (first, n, chunk) in enumerate(self.spans):
            if first + n <= start:
                continue
            last = i == last_index
            if chunk.type == ChunkType.TEXT:
                tokens = chunk.tokens[max(0, start - first):]
                decode_text(tokens, first + (n - len(tokens)), last)
                decoded += len(tokens)
            else:
                self.mctx.eval(ctx, chunk, n_past=first, seq_id=seq_id, n_batch=n_batch, logits_last=last)
                decoded += chunk.n_tokens
        return decoded


__all__ = ["MediaPrompt"]

"""Batch: tokens (or embeddings) with positions and sequence ids for one decode (``llama_batch``)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ._ffi import ffi, lib
from ._handle import CObject
from .errors import InvalidBatchError

_LOGITS_MODES = {"none": 0, "last": 1, "all": 2}


def _free_batch(p) -> None:
    lib.llama_batch_free(p[0])


class Batch(CObject):
    """A reusable ``llama_batch_init`` batch of up to ``capacity`` tokens.

    Bulk adds (:meth:`add_sequence`, :meth:`from_tokens`) are filled in C, with no
    per-token Python loop. Positions may be left to the context (``pos0=None``): they
    then continue each sequence where its memory ends, resolved at decode time.
    """

    def __init__(self, capacity: int = 512, *, embd: int = 0, n_seq_max: int = 1):
        if capacity < 1:
            raise ValueError("batch capacity must be at least 1")
        if n_seq_max < 1:
            raise ValueError("n_seq_max must be at least 1")
        c = ffi.new("struct llama_batch *", lib.llama_batch_init(capacity, embd, n_seq_max))
        self._own(c, _free_batch)
        self._c = c
        self.capacity = capacity
        self.n_embd = embd
        self.n_seq_max = n_seq_max
        self.n_outputs = 0
        self._auto: list[tuple[int, int, int]] = []  # (start, count, seq_id) with positions from memory
        self._seq_buf = ffi.new("llama_seq_id[]", n_seq_max)

    @classmethod
    def from_tokens(cls, tokens: Sequence[int] | np.ndarray, pos0: int | None = None, seq_id: int = 0,
                    logits: str = "last") -> Batch:
        """A batch holding ``tokens`` for one sequence (positions from memory when pos0 is None)."""
        batch = cls(max(1, len(tokens)))
        batch.add_sequence(tokens, pos0, seq_id, logits)
        return batch

    def __len__(self) -> int:
        return self._c.n_tokens if self._handle is not None else 0

    @property
    def n_tokens(self) -> int:
        return self._ptr.n_tokens

    def clear(self) -> None:
        """Empty the batch for reuse."""
        self._ptr.n_tokens = 0
        self.n_outputs = 0
        self._auto.clear()

    def add(self, token: int, pos: int, seq_ids: int | Sequence[int] = 0, logits: bool = False) -> None:
        """Append one token at ``pos`` for one or several sequences."""
        if self.n_embd:
            raise InvalidBatchError("this batch carries embeddings, not tokens: use add_embeddings()")
        seqs = (seq_ids,) if isinstance(seq_ids, int) else tuple(seq_ids)
        if not 1 <= len(seqs) <= self.n_seq_max:
            raise ValueError(f"a token belongs to 1..{self.n_seq_max} sequences in this batch, got {len(seqs)}")
        for i, s in enumerate(seqs):
            self._seq_buf[i] = s
        if lib.llamapy_batch_add_token(self._ptr, self.capacity, token, pos, self._seq_buf, len(seqs), logits) < 0:
            raise InvalidBatchError(f"the batch is full ({self.capacity} tokens)")
        self.n_outputs += bool(logits)

    def add_sequence(self, tokens: Sequence[int] | np.ndarray, pos0: int | None = 0, seq_id: int = 0,
                     logits: str = "last") -> None:
        """Append tokens of one sequence at positions pos0, pos0+1, ...

        ``logits`` is "last" (the usual: sample after the prompt), "all" or "none".
        """
        if self.n_embd:
            raise InvalidBatchError("this batch carries embeddings, not tokens: use add_embeddings()")
        arr = np.ascontiguousarray(tokens, dtype=np.int32)
        self._append(ffi.from_buffer("llama_token[]", arr), len(arr), pos0, seq_id, logits)

    def add_embeddings(self, embeddings: np.ndarray, pos0: int | None = 0, seq_id: int = 0,
                       logits: str = "last") -> None:
        """Append rows of input embeddings (shape (n, n_embd)) for one sequence."""
        if not self.n_embd:
            raise InvalidBatchError("this batch carries tokens; create it with Batch(capacity, embd=n_embd)")
        arr = np.ascontiguousarray(embeddings, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != self.n_embd:
            raise ValueError(f"embeddings must have shape (n, {self.n_embd}), got {arr.shape}")
        start = self.n_tokens
        if start + len(arr) > self.capacity:
            raise InvalidBatchError(f"the batch is full ({self.capacity} tokens)")
        dst = np.frombuffer(ffi.buffer(self._c.embd, self.capacity * self.n_embd * 4), dtype=np.float32)
        dst[start * self.n_embd:(start + len(arr)) * self.n_embd] = arr.ravel()
        self._append(ffi.NULL, len(arr), pos0, seq_id, logits)

    def _append(self, tokens, n: int, pos0: int | None, seq_id: int, logits: str) -> None:
        try:
            mode = _LOGITS_MODES[logits]
        except KeyError:
            raise ValueError(f"logits must be one of {', '.join(_LOGITS_MODES)}, got {logits!r}") from None
        start = self._ptr.n_tokens
        if lib.llamapy_batch_add_seq(self._c, self.capacity, tokens, n, pos0 or 0, seq_id, mode) < 0:
            raise InvalidBatchError(f"{n} more tokens do not fit in the batch "
                                    f"({start} of {self.capacity} used)")
        if pos0 is None and n:
            self._auto.append((start, n, seq_id))
        self.n_outputs += n if mode == 2 else (1 if mode == 1 and n else 0)

    def tokens(self) -> list[int]:
        """The token ids in the batch (a copy)."""
        return ffi.unpack(self._c.token, self.n_tokens) if not self.n_embd else []

    def positions(self) -> list[int]:
        return ffi.unpack(self._c.pos, self.n_tokens)

    def seq_ids(self, i: int) -> list[int]:
        """The sequence ids of token ``i``."""
        if not 0 <= i < self.n_tokens:
            raise IndexError(i)
        return ffi.unpack(self._c.seq_id[i], self._c.n_seq_id[i])

    def __repr__(self) -> str:
        return f"<Batch {len(self)}/{self.capacity} tokens>"


class LlamaBatch(Batch):
    """The batch class as other bindings spell it: ``LlamaBatch(n_tokens=512, embd=0, n_seq_max=1)``."""

    def __init__(self, n_tokens: int = 512, embd: int = 0, n_seq_max: int = 1):
        super().__init__(n_tokens, embd=embd, n_seq_max=n_seq_max)

    @classmethod
    def from_tokens(cls, tokens: Sequence[int] | np.ndarray, lib: Any = None, pos0: int | None = None,  # type: ignore[override]
                    seq_id: int = 0, logits: str = "last") -> LlamaBatch:
        """A batch holding ``tokens`` (``lib``, which some APIs pass, is not needed)."""
        batch = cls(max(1, len(tokens)))
        batch.add_sequence(tokens, pos0, seq_id, logits)
        return batch


def llama_batch_get_one(tokens: Sequence[int] | np.ndarray, pos_offset: int = 0) -> LlamaBatch:
    """A batch for one sequence with logits for its last token, as llama.h's ``llama_batch_get_one``:
    positions follow what the context holds, or start at ``pos_offset`` when it is given."""
    return LlamaBatch.from_tokens(tokens, pos0=pos_offset or None)

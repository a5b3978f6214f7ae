"""Context: decoding state of a model (``llama_context``, ``llama_memory_*``, ``llama_state_*``)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import _ffi
from ._ffi import ffi, lib
from ._handle import CObject
from ._params import StructParams, enum_value, fill
from .batch import Batch
from .enums import PoolingType
from .errors import (
    ContextError,
    DecodeAbortedError,
    DecodeError,
    InvalidBatchError,
    NoKvSlotError,
    StateError,
)
from .model import Model

POLL_INTERVAL_S = 0.05  # how often a running decode lets Python handle Ctrl-C


def default_threads() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _flash_attn(value: Any) -> int:
    if value is True:
        return lib.LLAMA_FLASH_ATTN_TYPE_ENABLED
    if value is False:
        return lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
    aliases = {"on": "enabled", "off": "disabled"}
    return enum_value("LLAMA_FLASH_ATTN_TYPE_", aliases.get(str(value).lower(), value), "flash_attn")


_CONVERTERS = {
    "type_k": lambda v: enum_value("GGML_TYPE_", v, "type_k"),
    "type_v": lambda v: enum_value("GGML_TYPE_", v, "type_v"),
    "pooling_type": lambda v: enum_value("LLAMA_POOLING_TYPE_", v, "pooling_type"),
    "attention_type": lambda v: enum_value("LLAMA_ATTENTION_TYPE_", v, "attention_type"),
    "rope_scaling_type": lambda v: enum_value("LLAMA_ROPE_SCALING_TYPE_", v, "rope_scaling_type"),
    "flash_attn_type": _flash_attn,
    "ctx_type": lambda v: enum_value("LLAMA_CONTEXT_TYPE_", v, "ctx_type"),
}


@dataclass(frozen=True)
class PerfData:
    """llama.cpp's timing counters of a context."""

    load_ms: float
    prompt_eval_ms: float
    eval_ms: float
    n_prompt_tokens: int
    n_eval: int
    n_graph_reused: int

    @property
    def prompt_tokens_per_s(self) -> float:
        return self.n_prompt_tokens / self.prompt_eval_ms * 1e3 if self.prompt_eval_ms else 0.0

    @property
    def eval_tokens_per_s(self) -> float:
        return self.n_eval / self.eval_ms * 1e3 if self.eval_ms else 0.0


class Memory:
    """The context's memory (KV cache or recurrent state), ``llama_memory_*``.

    Positions ``p0``/``p1`` are a half-open range; negative means "from the start" /
    "to the end". ``seq_id`` -1 means every sequence where llama.cpp allows it.
    """

    def __init__(self, ctx: Context):
        self._ctx = ctx

    @property
    def _mem(self) -> Any:
        return lib.llama_get_memory(self._ctx._ptr)

    def clear(self, data: bool = True) -> None:
        """Forget every sequence (``data`` also zeroes the buffers)."""
        lib.llama_memory_clear(self._mem, data)

    def seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> bool:
        """Remove positions [p0, p1) of a sequence (-1: of all); False if that is not
        possible (a recurrent model can only drop a whole sequence)."""
        if seq_id != -1:
            self._check_seq(seq_id)
        return bool(lib.llama_memory_seq_rm(self._mem, seq_id, p0, p1))

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        """Share positions [p0, p1) of ``src`` with ``dst`` (no copy of the data).

        With a per-sequence (non-unified) KV cache only whole sequences can be copied.
        """
        self._check_seq(src)
        self._check_seq(dst)
        if not self._ctx.kv_unified and self._ctx.n_seq_max > 1 and (p0 > 0 or p1 > 0):
            raise ValueError("copying part of a sequence needs a unified KV cache: create the context "
                             "with kv_unified=True, or copy the whole sequence (p0=p1=-1)")
        lib.llama_memory_seq_cp(self._mem, src, dst, p0, p1)

    def seq_keep(self, seq_id: int) -> None:
        """Remove every sequence but ``seq_id``."""
        self._check_seq(seq_id)
        lib.llama_memory_seq_keep(self._mem, seq_id)

    def seq_add(self, seq_id: int, p0: int, p1: int, delta: int) -> None:
        """Shift positions [p0, p1) of a sequence by ``delta`` (needs can_shift)."""
        self._check_seq(seq_id)
        self._check_shift()
        lib.llama_memory_seq_add(self._mem, seq_id, p0, p1, delta)

    def seq_div(self, seq_id: int, p0: int, p1: int, d: int) -> None:
        """Integer-divide positions [p0, p1) by ``d`` (self-extend; needs can_shift)."""
        if d < 1:
            raise ValueError("seq_div: d must be >= 1")
        self._check_seq(seq_id)
        self._check_shift()
        lib.llama_memory_seq_div(self._mem, seq_id, p0, p1, d)

    def seq_pos_min(self, seq_id: int) -> int:
        """Smallest position of a sequence in memory, -1 if empty."""
        self._check_seq(seq_id)
        return lib.llama_memory_seq_pos_min(self._mem, seq_id)

    def seq_pos_max(self, seq_id: int) -> int:
        """Largest position of a sequence in memory, -1 if empty."""
        self._check_seq(seq_id)
        return lib.llama_memory_seq_pos_max(self._mem, seq_id)

    @property
    def can_shift(self) -> bool:
        return bool(lib.llama_memory_can_shift(self._mem))

    def _check_seq(self, seq_id: int) -> None:
        n = self._ctx.n_seq_max
        if not 0 <= seq_id < n:
            raise ValueError(f"sequence id {seq_id} is out of range (the context has n_seq_max={n})")

    def _check_shift(self) -> None:
        if not self.can_shift:
            raise ContextError("this model's memory cannot shift positions")


def _check_pooled_split(model: Model, params: Any) -> None:
    """Refuse what llama.cpp would abort on: pooled embeddings over several sequences, where a
    micro-batch is split evenly between them, need n_ubatch to be a multiple of n_seq_max."""
    if not params.embeddings or params.n_seq_max <= 1:
        return
    pooling = params.pooling_type
    if pooling == lib.LLAMA_POOLING_TYPE_UNSPECIFIED:
        pooling = int(model.meta(f"{model.meta('general.architecture')}.pooling_type") or 0)
    n_ubatch = min(params.n_batch, params.n_ubatch)
    if pooling != lib.LLAMA_POOLING_TYPE_NONE and n_ubatch % params.n_seq_max:
        raise ContextError(f"pooled embeddings over n_seq_max={params.n_seq_max} sequences need n_ubatch "
                           f"({n_ubatch}) to be a multiple of n_seq_max (llama.cpp would abort)")


class Context(CObject):
    """A llama.cpp context: decodes batches against a model and holds its memory.

    Every ``llama_context_params`` field is accepted by name; friendly forms exist for the
    common ones (``flash_attn="auto"|True|False``, ``type_k="q8_0"``, ``pooling_type="mean"``).
    Logits and embeddings come back as read-only numpy views of llama.cpp's buffers: they
    are valid until the next decode; ``.copy()`` them to keep them.

    Sliding-window layers keep only their window (``swa_full=False``, as llama.cpp's own
    programs do): a fraction of a full-size cache, but such a sequence cannot be cut back
    to a position whose window has already been overwritten (check ``memory.seq_pos_min``).
    """

    def __init__(
        self,
        model: Model,
        *,
        n_ctx: int | None = None,
        n_batch: int | None = None,
        n_ubatch: int | None = None,
        n_seq_max: int | None = None,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        flash_attn: bool | str | None = None,
        type_k: str | int | None = None,
        type_v: str | int | None = None,
        embeddings: bool | None = None,
        pooling_type: str | int | None = None,
        attention_type: str | int | None = None,
        swa_full: bool = False,
        offload_kqv: bool | None = None,
        no_perf: bool | None = None,
        kv_unified: bool | None = None,
        **more_params: Any,
    ):
        if model.vocab_only:
            raise ContextError(f"{model.path.name} was loaded with vocab_only=True: it can tokenize, but a "
                               f"context needs the weights (load it without vocab_only)")
        params = lib.llama_context_default_params()
        threads = n_threads or default_threads()
        values = dict(n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch, n_seq_max=n_seq_max,
                      n_threads=threads, n_threads_batch=n_threads_batch or threads,
                      flash_attn_type=flash_attn, type_k=type_k, type_v=type_v, embeddings=embeddings,
                      pooling_type=pooling_type, attention_type=attention_type, swa_full=swa_full,
                      offload_kqv=offload_kqv, no_perf=no_perf, kv_unified=kv_unified, **more_params)
        for name in ("abort_callback", "abort_callback_data", "cb_eval", "cb_eval_user_data", "samplers",
                     "n_samplers", "ctx_other"):
            if values.get(name) is not None:
                raise TypeError(f"{name} is managed by llamapy; use Context.cancel() / Ctrl-C to abort a decode")
        fill(params, values, _CONVERTERS, "llama_context_params")
        abort = ffi.new("struct llamapy_abort_state *")
        abort.poll_interval = POLL_INTERVAL_S
        params.abort_callback = ffi.addressof(lib, "llamapy_abort_callback")
        params.abort_callback_data = abort
        _check_pooled_split(model, params)
        model.check_servers()
        ptr = lib.llama_init_from_model(model._ptr, params)
        if ptr == ffi.NULL:
            raise ContextError(
                f"llama.cpp could not create a context (n_ctx={params.n_ctx}, n_batch={params.n_batch}, "
                f"n_seq_max={params.n_seq_max}): not enough memory, or an invalid combination of parameters")
        self._own(ptr, model.guard_free(lib.llama_free, "context"), model, keep=(abort,))
        self.kv_unified = bool(params.kv_unified)
        self._abort = abort
        self.model = model
        self.memory = Memory(self)
        self._n_vocab = model.vocab.n_tokens
        self._n_embd = model.n_embd_out
        self._n_outputs = 0

    # -- sizes and settings ------------------------------------------------------------
    n_ctx = property(lambda self: lib.llama_n_ctx(self._ptr), doc="context size in tokens")
    n_ctx_seq = property(lambda self: lib.llama_n_ctx_seq(self._ptr), doc="context size of one sequence")
    n_batch = property(lambda self: lib.llama_n_batch(self._ptr))
    n_ubatch = property(lambda self: lib.llama_n_ubatch(self._ptr))
    n_seq_max = property(lambda self: lib.llama_n_seq_max(self._ptr))
    n_threads = property(lambda self: lib.llama_n_threads(self._ptr))
    n_threads_batch = property(lambda self: lib.llama_n_threads_batch(self._ptr))

    @property
    def pooling_type(self) -> PoolingType:
        return PoolingType(lib.llama_pooling_type(self._ptr))

    def set_threads(self, n_threads: int, n_threads_batch: int | None = None) -> None:
        """Threads for generation and for batch (prompt) processing."""
        if n_threads < 1 or (n_threads_batch is not None and n_threads_batch < 1):
            raise ValueError("thread counts must be >= 1")
        lib.llama_set_n_threads(self._ptr, n_threads, n_threads_batch or n_threads)

    def set_embeddings(self, on: bool) -> None:
        lib.llama_set_embeddings(self._ptr, on)

    def set_causal_attn(self, on: bool) -> None:
        lib.llama_set_causal_attn(self._ptr, on)

    def set_warmup(self, on: bool) -> None:
        lib.llama_set_warmup(self._ptr, on)

    def synchronize(self) -> None:
        """Wait for pending device work."""
        lib.llama_synchronize(self._ptr)

    # -- decode ------------------------------------------------------------------------
    def cancel(self) -> None:
        """Abort the decode running in another thread (it raises DecodeAbortedError there)."""
        if self._handle is not None:
            self._abort.cancel = 1

    def decode(self, batch: Batch) -> None:
        """Run the model on a batch. Errors leave the memory as it was before the call.

        Raises NoKvSlotError (context full), InvalidBatchError, DecodeAbortedError
        (cancel()), KeyboardInterrupt (Ctrl-C) or DecodeError.
        """
        self._run(batch, lib.llama_decode)

    def encode(self, batch: Batch) -> None:
        """Run the encoder of an encoder-decoder model (or an embedding model) on a batch."""
        self._run(batch, lib.llama_encode)

    def _run(self, batch: Batch, fn: Any) -> None:
        ptr = self._ptr
        c = batch._c
        if batch._handle is None:
            batch._ptr  # raises ClosedError
        if c.n_tokens == 0:
            raise InvalidBatchError("the batch is empty")
        if batch._auto:
            self._resolve_positions(batch)
        if self.model.rpc_servers:  # ggml aborts the process on a server that went away
            self.model.check_servers()
        abort = self._abort
        abort.cancel = 0
        abort.aborted = 0
        _ffi.last_error = ""
        rc = fn(ptr, c[0])
        if rc != 0:
            self._failed(rc, batch)
        self._n_outputs = batch.n_outputs
        if _ffi.interrupt_pending():  # Ctrl-C seen by the poll after the last node: the decode finished
            raise _ffi.take_interrupt()  # type: ignore[misc]

    def _resolve_positions(self, batch: Batch) -> None:
        pos = np.frombuffer(ffi.buffer(batch._c.pos, batch.capacity * 4), dtype=np.int32)
        nxt: dict[int, int] = {}
        for start, n, seq in batch._auto:
            p0 = nxt.get(seq, self.memory.seq_pos_max(seq) + 1)
            pos[start:start + n] = np.arange(p0, p0 + n, dtype=np.int32)
            nxt[seq] = p0 + n
        batch._auto.clear()

    def _failed(self, rc: int, batch: Batch) -> None:
        interrupt = _ffi.take_interrupt()
        if rc == 1:
            raise NoKvSlotError(
                f"no room in the context for {batch.n_tokens} more tokens (n_ctx={self.n_ctx}): "
                f"free positions with memory.seq_rm(), use a smaller batch or a larger n_ctx", rc)
        if rc == -1:
            detail = f" ({_ffi.last_error})" if _ffi.last_error else ""
            raise InvalidBatchError(
                f"llama.cpp rejected the batch{detail}: token ids out of range, positions that do not continue "
                f"the sequence, or sequence ids >= n_seq_max", rc)
        self._roll_back(batch)
        if rc == 2:
            if interrupt is not None:
                raise interrupt
            raise DecodeAbortedError("the decode was cancelled; the context is unchanged", rc)
        raise DecodeError(f"llama_decode failed with code {rc}", rc)

    def _roll_back(self, batch: Batch) -> None:
        """Remove what an aborted decode left in memory, so the context is as before."""
        c = batch._c
        first: dict[int, int] = {}
        for i in range(c.n_tokens):
            for k in range(c.n_seq_id[i]):
                s = c.seq_id[i][k]
                first[s] = min(first.get(s, c.pos[i]), c.pos[i])
        for s, p0 in first.items():
            self.memory.seq_rm(s, p0, -1)

    # -- outputs -----------------------------------------------------------------------
    def _view(self, ptr: Any, n: int) -> np.ndarray:
        arr = np.frombuffer(ffi.buffer(ptr, n * 4), dtype=np.float32)
        arr.flags.writeable = False
        return arr

    def logits(self, i: int = -1) -> np.ndarray:
        """Logits (n_vocab floats) of output ``i`` of the last decode (-1: the last one).

        A zero-copy view valid until the next decode.
        """
        p = lib.llama_get_logits_ith(self._ptr, i)
        if p == ffi.NULL:
            raise IndexError(f"no logits for output {i}: request them in the batch (logits=...)")
        return self._view(p, self._n_vocab)

    def all_logits(self) -> np.ndarray:
        """Every output of the last decode, shape (n_outputs, n_vocab); a view."""
        p = lib.llama_get_logits(self._ptr)
        if p == ffi.NULL or self._n_outputs == 0:
            return np.empty((0, self._n_vocab), dtype=np.float32)
        return self._view(p, self._n_outputs * self._n_vocab).reshape(self._n_outputs, self._n_vocab)

    def embeddings(self, i: int = -1) -> np.ndarray:
        """Embedding of output token ``i`` (needs embeddings=True and pooling none)."""
        p = lib.llama_get_embeddings_ith(self._ptr, i)
        if p == ffi.NULL:
            raise IndexError(f"no embeddings for output {i}: create the context with embeddings=True")
        return self._view(p, self._n_embd)

    def sequence_embeddings(self, seq_id: int = 0) -> np.ndarray:
        """Pooled embedding of a sequence (needs embeddings=True and a pooling type)."""
        p = lib.llama_get_embeddings_seq(self._ptr, seq_id)
        if p == ffi.NULL:
            raise IndexError(f"no pooled embeddings for sequence {seq_id}: use embeddings=True with pooling")
        n = self.model.n_cls_out if self.pooling_type == PoolingType.RANK else self._n_embd
        return self._view(p, n)

    # -- state -------------------------------------------------------------------------
    def state_size(self) -> int:
        return lib.llama_state_get_size(self._ptr)

    def save_state(self) -> bytes:
        """The whole context state (memory, outputs, RNG) as bytes."""
        size = lib.llama_state_get_size(self._ptr)
        buf = ffi.new("uint8_t[]", size)
        n = lib.llama_state_get_data(self._ptr, buf, size)
        return ffi.unpack(ffi.cast("char *", buf), n)

    def load_state(self, data: bytes) -> None:
        """Restore a state from :meth:`save_state` (same model and context sizes)."""
        n = lib.llama_state_set_data(self._ptr, ffi.from_buffer("uint8_t[]", data), len(data))
        if n == 0:
            raise StateError("llama.cpp rejected the state (different model or context size?)")

    def save_state_file(self, path: str | os.PathLike, tokens: Sequence[int] = ()) -> None:
        """Write the state, with the tokens it corresponds to, to a file."""
        arr = np.ascontiguousarray(tokens, dtype=np.int32)
        if not lib.llama_state_save_file(self._ptr, os.fsencode(Path(path)),
                                         ffi.from_buffer("llama_token[]", arr), len(arr)):
            raise StateError(f"could not write the state to {path}")

    def load_state_file(self, path: str | os.PathLike, max_tokens: int | None = None) -> list[int]:
        """Restore a state written by :meth:`save_state_file`; returns its tokens."""
        return self._load_file(path, max_tokens, lambda ptr, name, toks, cap, n:
                               lib.llama_state_load_file(ptr, name, toks, cap, n))

    def _load_file(self, path: str | os.PathLike, max_tokens: int | None, load: Any) -> list[int]:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"state file not found: {p}")
        cap = max_tokens or self.n_ctx
        toks = ffi.new("llama_token[]", cap)
        n = ffi.new("size_t *")
        if not load(self._ptr, os.fsencode(p), toks, cap, n):
            raise StateError(f"could not load the state from {p} (wrong model, context size, or corrupt file)")
        return ffi.unpack(toks, n[0])

    def save_seq_state(self, seq_id: int) -> bytes:
        """The memory of one sequence as bytes."""
        self.memory._check_seq(seq_id)
        size = lib.llama_state_seq_get_size(self._ptr, seq_id)
        buf = ffi.new("uint8_t[]", size)
        n = lib.llama_state_seq_get_data(self._ptr, buf, size, seq_id)
        return ffi.unpack(ffi.cast("char *", buf), n)

    def load_seq_state(self, data: bytes, seq_id: int) -> None:
        """Restore one sequence from :meth:`save_seq_state` into ``seq_id``."""
        self.memory._check_seq(seq_id)
        if lib.llama_state_seq_set_data(self._ptr, ffi.from_buffer("uint8_t[]", data), len(data), seq_id) == 0:
            raise StateError("llama.cpp rejected the sequence state (no room, or from another model)")

    def save_seq_state_file(self, path: str | os.PathLike, seq_id: int, tokens: Sequence[int] = ()) -> None:
        self.memory._check_seq(seq_id)
        arr = np.ascontiguousarray(tokens, dtype=np.int32)
        if lib.llama_state_seq_save_file(self._ptr, os.fsencode(Path(path)), seq_id,
                                         ffi.from_buffer("llama_token[]", arr), len(arr)) == 0:
            raise StateError(f"could not write the sequence state to {path}")

    def load_seq_state_file(self, path: str | os.PathLike, seq_id: int, max_tokens: int | None = None) -> list[int]:
        """Restore one sequence written by :meth:`save_seq_state_file` into ``seq_id``."""
        self.memory._check_seq(seq_id)
        return self._load_file(path, max_tokens, lambda ptr, name, toks, cap, n:
                               lib.llama_state_seq_load_file(ptr, name, seq_id, toks, cap, n) != 0)

    # -- adapters ----------------------------------------------------------------------
    def set_loras(self, adapters: Sequence[tuple[Any, float]]) -> None:
        """Apply LoRA adapters with their scales (replacing the current set)."""
        from .adapters import apply_loras

        apply_loras(self, adapters)

    def set_control_vector(self, data: np.ndarray | None, il_start: int = 1, il_end: int | None = None) -> None:
        """Apply a control vector (shape (n_layer, n_embd)) to layers il_start..il_end; None clears."""
        from .adapters import apply_control_vector

        apply_control_vector(self, data, il_start, il_end)

    # -- performance -------------------------------------------------------------------
    def perf(self) -> PerfData:
        """Timings since creation or perf_reset() (needs no_perf=False; waits for pending work)."""
        ptr = self._ptr
        lib.llama_synchronize(ptr)
        d = lib.llama_perf_context(ptr)
        return PerfData(d.t_load_ms, d.t_p_eval_ms, d.t_eval_ms, d.n_p_eval, d.n_eval, d.n_reused)

    def perf_reset(self) -> None:
        lib.llama_perf_context_reset(self._ptr)

    def __repr__(self) -> str:
        return "<Context (closed)>" if self.closed else f"<Context n_ctx={self.n_ctx} n_seq_max={self.n_seq_max}>"


class LlamaContextParams(StructParams):
    """``llama_context_params`` with attribute access (``params.n_ctx = 2048``) and llama.cpp's defaults."""

    _struct = "struct llama_context_params"
    _prefixes = {"type_k": "GGML_TYPE_", "type_v": "GGML_TYPE_", "pooling_type": "LLAMA_POOLING_TYPE_",
                 "attention_type": "LLAMA_ATTENTION_TYPE_", "rope_scaling_type": "LLAMA_ROPE_SCALING_TYPE_",
                 "flash_attn_type": "LLAMA_FLASH_ATTN_TYPE_", "ctx_type": "LLAMA_CONTEXT_TYPE_"}

    @staticmethod
    def _defaults() -> Any:
        params = lib.llama_context_default_params()
        params.swa_full = False  # as Context and llama.cpp's own programs: sliding-window layers keep their window
        return params


class LlamaContext(Context):
    """The context class as other bindings spell it: ``LlamaContext(model, LlamaContextParams())`` or
    ``LlamaContext(model, n_ctx=2048, n_threads=-1, flash_attn=False)``, with their helper names."""

    def __init__(self, model: Model, params: LlamaContextParams | None = None, **settings: Any):
        values = (params.changed() if params is not None else {}) | settings
        for key in ("n_threads", "n_threads_batch"):
            if values.get(key) is not None and values[key] < 1:  # -1: as many as the machine has
                values[key] = None
        super().__init__(model, **values)

    def kv_cache_clear(self) -> None:
        self.memory.clear()

    def kv_cache_seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> bool:
        return self.memory.seq_rm(seq_id, p0, p1)

    def kv_cache_seq_add(self, seq_id: int, p0: int, p1: int, delta: int) -> None:
        self.memory.seq_add(seq_id, p0, p1, delta)

    def kv_cache_seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        self.memory.seq_cp(src, dst, p0, p1)

    def kv_cache_seq_keep(self, seq_id: int) -> None:
        self.memory.seq_keep(seq_id)

    def get_logits(self, idx: int = -1) -> list[float]:
        """The logits of output ``idx`` as a list (``logits()`` gives a zero-copy numpy view)."""
        return self.logits(idx).tolist()

    def print_perf_data(self) -> None:
        """Print llama.cpp's timing counters of this context to stdout."""
        d = self.perf()
        print(f"load time: {d.load_ms:.2f} ms\n"
              f"prompt eval time: {d.prompt_eval_ms:.2f} ms / {d.n_prompt_tokens} tokens "
              f"({d.prompt_tokens_per_s:.2f} tokens/s)\n"
              f"eval time: {d.eval_ms:.2f} ms / {d.n_eval} runs ({d.eval_tokens_per_s:.2f} tokens/s)")

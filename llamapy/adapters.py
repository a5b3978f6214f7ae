"""LoRA adapters and control vectors (``llama_adapter_*``, ``llama_set_adapters_lora``, ``llama_set_adapter_cvec``)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ._ffi import ffi, lib
from ._handle import CObject
from .errors import AdapterError

if TYPE_CHECKING:
    from .context import Context
    from .model import Model


class LoraAdapter(CObject):
    """A LoRA adapter (GGUF) loaded for a model. Apply it with ``ctx.set_loras([(adapter, scale)])``."""

    def __init__(self, model: Model, path: str | os.PathLike):
        p = os.fspath(path)
        if not os.path.isfile(p):
            raise FileNotFoundError(f"LoRA adapter not found: {p}")
        ptr = lib.llama_adapter_lora_init(model._ptr, os.fsencode(p))
        if ptr == ffi.NULL:
            raise AdapterError(f"llama.cpp could not load the LoRA adapter {p} (not an adapter for this model?)")
        # llama.cpp frees adapters together with their model; freeing one early is allowed too.
        self._own(ptr, model.guard_free(lib.llama_adapter_lora_free, "LoRA adapter"), model)
        self.path = p

    @property
    def metadata(self) -> dict[str, str]:
        ptr = self._ptr
        out = {}
        for i in range(lib.llama_adapter_meta_count(ptr)):
            key = ffi.new("char[]", 256)
            val = ffi.new("char[]", 4096)
            if lib.llama_adapter_meta_key_by_index(ptr, i, key, 256) >= 0 and \
                    lib.llama_adapter_meta_val_str_by_index(ptr, i, val, 4096) >= 0:
                out[ffi.string(key).decode()] = ffi.string(val).decode("utf-8", "replace")
        return out

    @property
    def alora_invocation_tokens(self) -> list[int]:
        ptr = self._ptr
        n = lib.llama_adapter_get_alora_n_invocation_tokens(ptr)
        return ffi.unpack(lib.llama_adapter_get_alora_invocation_tokens(ptr), n) if n else []


def apply_loras(ctx: Context, adapters: Sequence[tuple[LoraAdapter, float]]) -> None:
    """Make exactly ``adapters`` (with scales) active on ``ctx``; an empty list removes all."""
    for a, _ in adapters:
        if a._h.parents[0] is not ctx.model._h:
            raise AdapterError("a LoRA adapter can only be applied to contexts of the model it was loaded for")
    ptrs = ffi.new("struct llama_adapter_lora *[]", [a._ptr for a, _ in adapters] or 1)
    scales = ffi.new("float[]", [float(s) for _, s in adapters] or 1)
    if lib.llama_set_adapters_lora(ctx._ptr, ptrs, len(adapters), scales) != 0:
        raise AdapterError("llama.cpp could not apply the LoRA adapters")
    ctx._loras = list(adapters)  # keep them alive while applied


def apply_control_vector(ctx: Context, data: np.ndarray | None, il_start: int, il_end: int | None) -> None:
    n_embd = ctx.model.n_embd
    if data is None:
        rc = lib.llama_set_adapter_cvec(ctx._ptr, ffi.NULL, 0, n_embd, 0, 0)
    else:
        arr = np.ascontiguousarray(data, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != n_embd:
            raise ValueError(f"a control vector has shape (n_layer, {n_embd}), got {arr.shape}")
        end = ctx.model.n_layer if il_end is None else il_end
        rc = lib.llama_set_adapter_cvec(ctx._ptr, ffi.from_buffer("float[]", arr), arr.size, n_embd, il_start, end)
    if rc != 0:
        raise AdapterError("llama.cpp could not apply the control vector (wrong size for this model?)")


__all__ = ["LoraAdapter", "apply_loras", "apply_control_vector"]

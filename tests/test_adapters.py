"""LoRA adapters (written here with the GGUF module) applied, scaled and removed."""
from __future__ import annotations

import numpy as np
import pytest

from llamapy import AdapterError, Batch, Context, LoraAdapter, Model
from llamapy.gguf import GGUFFile


def make_lora(path, rank: int = 4, layers: int = 2, shape_ok: bool = True):
    g = (GGUFFile.empty().set("general.architecture", "llama").set("general.type", "adapter")
         .set("adapter.type", "lora").set("adapter.lora.alpha", float(rank)))
    rng = np.random.default_rng(0)
    for layer in range(layers):
        n_in = 576 if shape_ok else 100
        g.add_tensor(f"blk.{layer}.attn_q.weight.lora_a", rng.normal(0, 0.1, (rank, n_in)).astype(np.float32))
        g.add_tensor(f"blk.{layer}.attn_q.weight.lora_b", rng.normal(0, 0.1, (576, rank)).astype(np.float32))
    return g.write(path)


def logits_with(ctx: Context, tokens: list[int]) -> np.ndarray:
    ctx.memory.clear()
    ctx.decode(Batch.from_tokens(tokens))
    return ctx.logits().copy()


def test_lora_apply_scale_remove(model, tmp_path):
    adapter = LoraAdapter(model, make_lora(tmp_path / "lora.gguf"))
    assert adapter.metadata["adapter.type"] == "lora"
    toks = model.vocab.tokenize("Hello there, how are you")
    with Context(model, n_ctx=128, n_threads=2) as ctx:
        base = logits_with(ctx, toks)
        ctx.set_loras([(adapter, 1.0)])
        full = logits_with(ctx, toks)
        ctx.set_loras([(adapter, 0.5)])
        half = logits_with(ctx, toks)
        ctx.set_loras([])
        again = logits_with(ctx, toks)
    assert np.abs(full - base).max() > 0.1
    assert np.abs(half - base).max() > 0.01 and np.abs(half - full).max() > 0.01  # the scale matters
    np.testing.assert_array_equal(again, base)


def test_bad_adapters(model, model_path, tmp_path):
    with pytest.raises(FileNotFoundError):
        LoraAdapter(model, tmp_path / "missing.gguf")
    with pytest.raises(AdapterError, match="could not load"):
        LoraAdapter(model, make_lora(tmp_path / "bad.gguf", shape_ok=False))
    other = Model.from_file(model_path)
    adapter = LoraAdapter(other, make_lora(tmp_path / "ok.gguf"))
    with Context(model, n_ctx=64, n_threads=1) as ctx:
        with pytest.raises(AdapterError, match="model it was loaded for"):
            ctx.set_loras([(adapter, 1.0)])

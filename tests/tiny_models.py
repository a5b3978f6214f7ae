"""Tiny random-weight GGUF models of a given architecture, written with llamapy's GGUF writer.

An architecture is a recipe: the tensors llama.cpp's loader requires for it, with shapes
in terms of the hyperparameters. ``write_tiny_model(path, "gemma3", n_layer=6, ...)`` gives
a file that llama.cpp loads and runs: random F32 weights (deterministic per seed) and a
small SentencePiece-style vocabulary (three specials, the ChatML markers and the 256 byte
tokens), so any text tokenizes and greedy generation is arbitrary but reproducible.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from llamapy.gguf import GGUFFile

# Shape symbols (GGUF order, fastest dimension first): E n_embd, V vocabulary, F n_ff,
# D head size, Q n_head*D, K n_head_kv*D, N n_head, X experts, G expert n_ff.
_ATTN = ("attn_q:E,Q", "attn_k:E,K", "attn_v:E,K", "attn_output:Q,E")
_FFN = ("ffn_gate:E,F", "ffn_up:E,F", "ffn_down:F,E")
_QK_NORM = ("attn_q_norm:D", "attn_k_norm:D")
_POST_NORMS = ("post_attention_norm:E", "post_ffw_norm:E")
_EXPERTS = ("ffn_gate_inp:E,X", "ffn_gate_exps:E,G,X", "ffn_up_exps:E,G,X", "ffn_down_exps:G,E,X")


class Recipe:
    """The tensors of one architecture: global ones (output head optional) and per layer."""

    def __init__(self, layer: tuple[str, ...], output: bool = True, extra_keys: Mapping[str, Any] | None = None,
                 experts: bool = False):
        self.layer = layer
        self.output = output  # a separate output matrix (else the embeddings are tied)
        self.extra_keys = dict(extra_keys or {})  # hyperparameters the loader requires for this arch
        self.experts = experts


RECIPES: dict[str, Recipe] = {
    "llama": Recipe(("attn_norm:E", *_ATTN, "ffn_norm:E", *_FFN)),
    "gemma2": Recipe(("attn_norm:E", *_ATTN, "ffn_norm:E", *_FFN, *_POST_NORMS), output=False),
    "gemma3": Recipe(("attn_norm:E", *_ATTN, *_QK_NORM, "ffn_norm:E", *_FFN, *_POST_NORMS), output=False),
    "cohere2": Recipe(("attn_norm:E", *_ATTN, *_FFN), output=False,
                      extra_keys={"attention.layer_norm_epsilon": 1e-5, "logit_scale": 1.0}),
    "olmo2": Recipe((*_ATTN, "attn_q_norm:Q", "attn_k_norm:K", *_FFN, *_POST_NORMS)),
    "exaone4": Recipe((*_ATTN, *_QK_NORM, *_FFN, *_POST_NORMS), output=False),
    "cohere2moe": Recipe(("attn_norm:E", *_ATTN, *_EXPERTS), experts=True,
                         extra_keys={"logit_scale": 1.0, "leading_dense_block_count": 0}),
    "gpt-oss": Recipe(("attn_norm:E", "post_attention_norm:E", *_ATTN, "attn_output.bias:E", "attn_sinks:N",
                       *_EXPERTS, "ffn_gate_inp.bias:X", "ffn_gate_exps.bias:G,X", "ffn_up_exps.bias:G,X",
                       "ffn_down_exps.bias:E,X"), experts=True),
}

SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _vocab(g: GGUFFile) -> int:
    tokens = SPECIALS + [f"<0x{b:02X}>" for b in range(256)]
    types = [_UNKNOWN, _CONTROL, _CONTROL, _CONTROL, _CONTROL] + [_BYTE] * 256
    g.set("tokenizer.ggml.model", "llama").set("tokenizer.ggml.tokens", tokens)
    g.set("tokenizer.ggml.scores", np.zeros(len(tokens), dtype=np.float32))
    g.set("tokenizer.ggml.token_type", np.array(types, dtype=np.int32))
    g.set("tokenizer.ggml.unknown_token_id", 0, "u32").set("tokenizer.ggml.bos_token_id", 1, "u32")
    g.set("tokenizer.ggml.eos_token_id", 2, "u32").set("tokenizer.ggml.eot_token_id", 4, "u32")
    g.set("tokenizer.ggml.add_bos_token", True).set("tokenizer.chat_template", CHATML)
    return len(tokens)


def write_tiny_model(path: str | os.PathLike, arch: str = "llama", *, n_layer: int = 2, n_embd: int = 64,
                     n_head: int = 4, n_head_kv: int = 2, n_ff: int = 128, n_ctx_train: int = 8192,
                     n_expert: int = 4, n_expert_used: int = 2, hparams: Mapping[str, Any] | None = None,
                     seed: int = 0) -> Path:
    """Write a loadable random-weight model of ``arch`` to ``path``.

    ``hparams`` adds or overrides metadata: keys without a dot-qualified namespace
    (``"attention.sliding_window"``) are put under the architecture's prefix; keys starting
    with ``general.`` or ``tokenizer.`` are written as given.
    """
    if arch not in RECIPES:
        raise ValueError(f"no tiny-model recipe for {arch!r}; known: {', '.join(sorted(RECIPES))}")
    recipe = RECIPES[arch]
    head = n_embd // n_head
    g = GGUFFile.empty()
    g.set("general.architecture", arch).set("general.name", f"tiny-{arch}")
    n_vocab = _vocab(g)
    keys: dict[str, Any] = {
        "context_length": n_ctx_train, "embedding_length": n_embd, "block_count": n_layer,
        "feed_forward_length": n_ff, "attention.head_count": n_head, "attention.head_count_kv": n_head_kv,
        "attention.layer_norm_rms_epsilon": 1e-6, "rope.freq_base": 10000.0,
    }
    if recipe.experts:
        keys |= {"expert_count": n_expert, "expert_used_count": n_expert_used, "expert_feed_forward_length": n_ff}
    keys |= recipe.extra_keys
    keys |= dict(hparams or {})
    for key, value in keys.items():
        full = key if key.startswith(("general.", "tokenizer.")) else f"{arch}.{key}"
        g.set(full, value, "u32" if isinstance(value, int) and not isinstance(value, bool) else None)
    dims = {"E": n_embd, "V": n_vocab, "F": n_ff, "D": head, "Q": n_head * head, "K": n_head_kv * head,
            "N": n_head, "X": n_expert, "G": n_ff}
    rng = np.random.default_rng(seed)

    def add(name: str, spec: str) -> None:
        shape = [dims[s] for s in spec.split(",")]
        if len(shape) == 1 and ("norm" in name or name.endswith("sinks")):
            data = 1.0 + 0.1 * rng.standard_normal(shape[0])
        else:  # fan-in scaled, so activations and logits stay of order one
            data = rng.standard_normal(shape[::-1]) / np.sqrt(shape[0])
        g.add_tensor(name if name.endswith((".weight", ".bias")) else name + ".weight", data.astype(np.float32))

    add("token_embd", "E,V")
    add("output_norm", "E")
    if recipe.output:
        add("output", "E,V")
    for i in range(n_layer):
        for item in recipe.layer:
            name, spec = item.split(":")
            add(f"blk.{i}.{name}", spec)
    return g.write(path)


__all__ = ["RECIPES", "Recipe", "write_tiny_model", "CHATML", "SPECIALS"]

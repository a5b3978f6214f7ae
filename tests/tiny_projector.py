"""A tiny random-weight LLaVA-style projector GGUF (a small ViT and a two-layer MLP), written
with llamapy's GGUF writer, that libmtmd loads and runs.

The layout follows what ``tools/mtmd/clip.cpp`` reads for the ``mlp`` projector type: the
``clip.vision.*`` hyperparameters, a patch-embedding convolution, learned position
embeddings, ``n_layer`` pre-norm transformer blocks (the last one is skipped: LLaVA takes the
penultimate layer's output) and the ``mm.0`` / ``mm.2`` projection to the text model's
embedding width. It proves the pipeline end to end, not any image understanding.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from llamapy.gguf import GGUFFile


def write_tiny_projector(path: str | os.PathLike, n_embd_text: int = 576, *, image_size: int = 32,
                         patch_size: int = 8, n_embd: int = 32, n_head: int = 4, n_ff: int = 48,
                         n_layer: int = 2, n_hidden: int = 64, seed: int = 0) -> Path:
    """Write a projector whose image gives ``(image_size // patch_size) ** 2`` tokens of width
    ``n_embd_text``; weights are random (deterministic per seed)."""
    rng = np.random.default_rng(seed)
    g = GGUFFile.empty()
    g.set("general.architecture", "clip").set("general.name", "tiny-llava-projector")
    g.set("clip.projector_type", "mlp").set("clip.has_vision_encoder", True).set("clip.use_gelu", True)
    for key, value in {"embedding_length": n_embd, "feed_forward_length": n_ff, "block_count": n_layer,
                       "projection_dim": n_embd_text, "attention.head_count": n_head,
                       "image_size": image_size, "patch_size": patch_size}.items():
        g.set(f"clip.vision.{key}", value, "u32")
    g.set("clip.vision.attention.layer_norm_epsilon", 1e-5, "f32")
    g.set("clip.vision.image_mean", [0.5, 0.5, 0.5], "arr[f32]")
    g.set("clip.vision.image_std", [0.5, 0.5, 0.5], "arr[f32]")
    n_patches = (image_size // patch_size) ** 2

    def add(name: str, *shape: int, norm: bool = False, scale: float = 1.0) -> None:
        """``shape`` in numpy order (slowest dimension first)."""
        if norm:
            data = 1.0 + 0.1 * rng.standard_normal(shape)
        else:  # fan-in scaled so activations stay of order one
            data = scale * rng.standard_normal(shape) / np.sqrt(shape[-1] if len(shape) > 1 else 1)
        g.add_tensor(name, data.astype(np.float32))

    add("v.patch_embd.weight", n_embd, 3, patch_size, patch_size, scale=1.0 / patch_size)
    add("v.patch_embd.bias", n_embd, scale=0.1)
    add("v.position_embd.weight", n_patches, n_embd, scale=0.1)
    for i in range(n_layer):
        p = f"v.blk.{i}"
        for part in ("attn_q", "attn_k", "attn_v", "attn_out"):
            add(f"{p}.{part}.weight", n_embd, n_embd)
            add(f"{p}.{part}.bias", n_embd, scale=0.1)
        for ln in ("ln1", "ln2"):
            add(f"{p}.{ln}.weight", n_embd, norm=True)
            add(f"{p}.{ln}.bias", n_embd, scale=0.1)
        add(f"{p}.ffn_up.weight", n_ff, n_embd)
        add(f"{p}.ffn_up.bias", n_ff, scale=0.1)
        add(f"{p}.ffn_down.weight", n_embd, n_ff)
        add(f"{p}.ffn_down.bias", n_embd, scale=0.1)
    add("mm.0.weight", n_hidden, n_embd)
    add("mm.0.bias", n_hidden, scale=0.1)
    add("mm.2.weight", n_embd_text, n_hidden, scale=0.05)
    add("mm.2.bias", n_embd_text, scale=0.01)
    return g.write(path)


def write_test_image(path: str | os.PathLike, width: int = 40, height: int = 30, seed: int = 0) -> Path:
    """A small PNG (random colours) written without PIL: zlib-compressed RGB rows."""
    import struct
    import zlib

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    out = Path(path)
    out.write_bytes(png)
    return out


__all__ = ["write_tiny_projector", "write_test_image"]

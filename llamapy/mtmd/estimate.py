"""How much memory a projector (mmproj) file needs: its weights, read from the file, and an
estimate of the compute buffer of one encode at its largest input."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..gguf import GGUFFile
from .errors import ProjectorError


@dataclass(frozen=True)
class ProjectorMemory:
    """Bytes of a projector: ``weights`` (exact) and ``compute`` (estimated)."""

    weights: int
    compute: int
    n_image_tokens: int  # tokens of the largest image the estimate assumes (0 without vision)

    @property
    def total(self) -> int:
        return self.weights + self.compute


def _u(meta: dict, key: str, default: int = 0) -> int:
    value = meta.get(key, default)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def projector_memory(path: str | os.PathLike) -> ProjectorMemory:
    """Weights of the projector at ``path`` and the compute buffer of encoding one image (or
    30 s of audio) at the largest size it accepts."""
    p = Path(path).expanduser()
    with GGUFFile.open(p) as g:
        meta = g.metadata
        weights = sum(t.n_bytes for t in g.tensors)
    if not any(k.startswith("clip.") for k in meta):
        raise ProjectorError(f"{p.name} is not a projector file (no clip.* keys)")
    compute = 0
    n_image = 0
    for prefix in ("vision", "audio"):
        n_embd = _u(meta, f"clip.{prefix}.embedding_length")
        if not n_embd:
            continue
        n_ff = _u(meta, f"clip.{prefix}.feed_forward_length", 4 * n_embd)
        n_head = max(1, _u(meta, f"clip.{prefix}.attention.head_count", 1))
        n_out = _u(meta, f"clip.{prefix}.projection_dim", n_embd)
        if prefix == "vision":
            patch = max(1, _u(meta, "clip.vision.patch_size", 14))
            size = _u(meta, "clip.vision.image_size", 224)
            max_pixels = _u(meta, "clip.vision.image_max_pixels")
            pixels = max(max_pixels, size * size)
            n_pos = max(1, pixels // (patch * patch))
            n_image = n_pos
            inputs = 3 * pixels + n_pos * 3 * patch * patch  # the image and its unfolded patches
        else:
            n_pos = 1500  # 30 s of audio after the encoder's downsampling
            inputs = _u(meta, "clip.audio.num_mel_bins", 128) * 3000
        # the live tensors of one block at its peak: q/k/v and residual, the attention
        # scores and their softmax, the feed-forward activations, the projected output
        live = 4 * n_pos * n_embd + 2 * n_head * n_pos * n_pos + 2 * n_pos * n_ff + n_pos * n_out
        compute = max(compute, 4 * (inputs + live))
    return ProjectorMemory(weights=weights, compute=compute, n_image_tokens=n_image)


__all__ = ["ProjectorMemory", "projector_memory"]

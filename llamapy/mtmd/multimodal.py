"""The reference API's multimodal functions: ``load_mmproj`` and ``process_image``.

    mmproj = load_mmproj("mmproj.gguf")
    embed = process_image(ctx=ctx, image_path="image.jpg", mmproj=mmproj)  # decoded into ctx
"""
from __future__ import annotations

import dataclasses
import os
import threading
import weakref
from pathlib import Path
from typing import Any

from ..context import Context
from ..gguf import GGUFFile
from ..model import Model
from .context import MtmdContext
from .errors import ProjectorError


class Projector:
    """A projector (mmproj) file, checked on load and bound to a text model on first use
    (libmtmd needs the text model to load a projector: one :class:`MtmdContext` per model)."""

    def __init__(self, path: str | os.PathLike, **params: Any):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"no such projector file: {self.path}")
        try:
            with GGUFFile.open(self.path) as g:
                meta = g.metadata
        except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
            raise ProjectorError(f"{self.path.name} is not a readable GGUF file: {e}") from None
        if not any(k.startswith("clip.") for k in meta):
            arch = meta.get("general.architecture", "?")
            raise ProjectorError(f"{self.path.name} is not a projector (architecture {arch!r}, no clip.* keys): "
                                 f"give the mmproj file that goes with the model")
        self.metadata = meta
        self.projector_type = meta.get("clip.projector_type") or meta.get("clip.vision.projector_type") \
            or meta.get("clip.audio.projector_type")
        self.has_vision = bool(meta.get("clip.has_vision_encoder", False))
        self.has_audio = bool(meta.get("clip.has_audio_encoder", False))
        self.params = params
        self._contexts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def context(self, model: Model) -> MtmdContext:
        """The projector loaded for ``model`` (loaded once per model)."""
        with self._lock:
            mctx = self._contexts.get(model._h)
            if mctx is None or mctx.closed:
                mctx = MtmdContext(self.path, model, **self.params)
                self._contexts[model._h] = mctx
            return mctx

    def __repr__(self) -> str:
        return f"<Projector {self.path.name} type={self.projector_type}>"


@dataclasses.dataclass
class LlavaImageEmbed:
    """An image decoded into a context: how many tokens it took and where the sequence now ends."""

    n_image_pos: int
    n_past: int
    image_id: str = ""
    seq_id: int = 0


def load_mmproj(path: str | os.PathLike, model: Model | None = None, **params: Any) -> Projector:
    """Open a projector file; with ``model``, load it for that model now (else on first use)."""
    proj = Projector(path, **params)
    if model is not None:
        proj.context(model)
    return proj


def process_image(ctx: Context, image_path: Any, mmproj: Projector | MtmdContext, seq_id: int = 0,
                  n_past: int | None = None) -> LlavaImageEmbed:
    """Encode an image and decode it into ``ctx`` where sequence ``seq_id`` ends (or at
    ``n_past``): the text that follows continues after it. ``image_path`` may also be bytes,
    a URL, a numpy array or a PIL image."""
    mctx = mmproj if isinstance(mmproj, MtmdContext) else mmproj.context(ctx.model)
    chunks = mctx.tokenize(mctx.marker, [image_path], add_special=False)
    new_n_past = mctx.eval(ctx, chunks, n_past, seq_id)
    ids = [c.id for c in chunks if c.id]
    return LlavaImageEmbed(n_image_pos=chunks.n_tokens, n_past=new_n_past, image_id=ids[0] if ids else "",
                           seq_id=seq_id)


__all__ = ["Projector", "LlavaImageEmbed", "load_mmproj", "process_image"]

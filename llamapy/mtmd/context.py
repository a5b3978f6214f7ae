"""MtmdContext: a multimodal projector (mmproj) loaded for a text model (``mtmd_context``)."""
from __future__ import annotations

import os
import re
import threading
import weakref
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import _ffi, rpc
from .._ffi import ffi, lib
from .._handle import CObject
from ..context import Context, default_threads
from ..errors import DecodeAbortedError, DecodeError, PromptTooLongError
from ..model import Model
from .bitmap import Bitmap
from .chunks import ChunkType, InputChunk, InputChunks
from .errors import MediaError, ProjectorError

_log_lock = threading.Lock()
_log_routed = False


def _route_logs() -> None:
    """Send libmtmd's (and clip's) log to the same place as llama.cpp's: the ``llamapy`` logger."""
    global _log_routed
    with _log_lock:
        if _log_routed:
            return
        cb = ffi.new("ggml_log_callback *")
        ud = ffi.new("void **")
        lib.llama_log_get(cb, ud)
        lib.mtmd_helper_log_set(cb[0], ud[0])
        _log_routed = True


def _check_projector_file(path: Path) -> None:
    """A clear error for files that are not projectors, before libmtmd reads them."""
    from ..gguf import GGUFFile

    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ProjectorError(f"{path.name} is not a GGUF file (a projector is an mmproj-*.gguf file)")
    try:
        with GGUFFile.open(path) as g:
            keys = g.keys()
            arch = g.get("general.architecture", "?")
    except Exception as e:  # noqa: BLE001 - an unreadable header is the same user error
        raise ProjectorError(f"{path.name} is not a readable GGUF file: {e}") from None
    if not any(k.startswith("clip.") for k in keys):
        raise ProjectorError(f"{path.name} is not a projector (architecture {arch!r}, no clip.* keys): give the "
                             f"mmproj file that goes with the model")


class MtmdContext(CObject):
    """A projector file loaded for ``model``: turns images (and audio, when the projector has
    an audio encoder) into embeddings the model reads as tokens.

    ``tokenize`` splits a prompt holding media markers into chunks (the media's token counts
    are known there, before anything is decoded); ``eval`` decodes the chunks into a
    :class:`~llamapy.Context`, encoding each image on the way.
    """

    def __init__(self, mmproj_path: str | os.PathLike, model: Model, *, n_threads: int | None = None,
                 use_gpu: bool = True, media_marker: str | None = None, warmup: bool = True,
                 image_min_tokens: int | None = None, image_max_tokens: int | None = None,
                 flash_attn: bool | str | None = None, print_timings: bool = False):
        _route_logs()
        path = Path(mmproj_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no such projector file: {path}")
        _check_projector_file(path)
        params = lib.mtmd_context_params_default()
        # libmtmd runs the projector on the first GPU-type device; registered RPC servers count as
        # such, so without a local GPU it would go remote (or abort on a server that went away).
        params.use_gpu = use_gpu and bool(rpc.local_offload_devices())
        params.n_threads = n_threads or default_threads()
        params.print_timings = print_timings
        params.warmup = warmup
        if image_min_tokens is not None:
            params.image_min_tokens = image_min_tokens
        if image_max_tokens is not None:
            params.image_max_tokens = image_max_tokens
        if flash_attn is not None:
            params.flash_attn_type = {True: lib.LLAMA_FLASH_ATTN_TYPE_ENABLED, "on": lib.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                                      False: lib.LLAMA_FLASH_ATTN_TYPE_DISABLED,
                                      "off": lib.LLAMA_FLASH_ATTN_TYPE_DISABLED,
                                      "auto": lib.LLAMA_FLASH_ATTN_TYPE_AUTO}[flash_attn]
        keep: tuple = ()
        if media_marker is not None:
            if not media_marker:
                raise ValueError("media_marker must not be empty")
            marker = ffi.new("char[]", media_marker.encode())
            params.media_marker = marker
            keep = (marker,)
        _ffi.last_error_reset()
        ptr = lib.mtmd_init_from_file(str(path).encode(), model._ptr, params)
        if ptr == ffi.NULL:
            detail = re.sub(r"^(\w+: )?(error: )?", "", _ffi.last_error) or "see the log (llamapy.set_verbose())"
            if "mismatch between text model" in detail:
                detail = (f"{detail}: this projector was made for another text model "
                          f"(use the mmproj file published with {model.path.name if model.path else 'the model'})")
            raise ProjectorError(f"could not load the projector {path.name}: {detail}")
        self._own(ptr, lib.mtmd_free, model, keep=keep)
        del keep
        self.model = model
        self.path = path
        self._n_embd = model.n_embd_inp
        self._lock = threading.Lock()  # libmtmd's encode/eval helpers are not thread-safe per context

    @classmethod
    def from_file(cls, mmproj_path: str | os.PathLike, model: Model, **params: Any) -> MtmdContext:
        return cls(mmproj_path, model, **params)

    # -- capabilities -----------------------------------------------------------------
    supports_vision = property(lambda self: bool(lib.mtmd_support_vision(self._ptr)))
    supports_audio = property(lambda self: bool(lib.mtmd_support_audio(self._ptr)))
    uses_mrope = property(lambda self: bool(lib.mtmd_decode_use_mrope(self._ptr)),
                          doc="positions are M-RoPE (an image advances fewer positions than it has tokens)")

    @property
    def audio_sample_rate(self) -> int | None:
        """The sample rate audio clips must have (None without an audio encoder)."""
        rate = lib.mtmd_get_audio_sample_rate(self._ptr)
        return int(rate) if rate > 0 else None

    @property
    def marker(self) -> str:
        """The text that stands for one media item in a prompt (default ``<__media__>``)."""
        return ffi.string(lib.mtmd_get_marker(self._ptr)).decode()

    @staticmethod
    def default_marker() -> str:
        return ffi.string(lib.mtmd_default_marker()).decode()

    # -- media ------------------------------------------------------------------------
    def load(self, source: Any) -> Bitmap:
        """A bitmap from a path, URL, bytes, numpy array, PIL image or content part."""
        from .media import load_media

        return load_media(self, source)

    def tokenize(self, text: str, media: Sequence[Any] = (), add_special: bool = True,
                 parse_special: bool = True) -> InputChunks:
        """Split ``text`` into chunks: one per media marker (in order, ``media[i]`` for the
        i-th marker) and the text between them. Media given without markers are put at the
        start of the text. ``add_special`` adds BOS as the model wants."""
        bitmaps = [self.load(m) for m in media]
        for b in bitmaps:
            if b.is_audio and not self.supports_audio:
                raise MediaError(f"audio was given, but the projector {self.path.name} has no audio encoder")
            if not b.is_audio and not self.supports_vision:
                raise MediaError(f"an image was given, but the projector {self.path.name} has no vision encoder")
        marker = self.marker
        n_markers = text.count(marker)
        if n_markers == 0 and bitmaps:
            text = marker * len(bitmaps) + text
            n_markers = len(bitmaps)
        if n_markers != len(bitmaps):
            raise MediaError(f"the prompt has {n_markers} media markers ({marker}) but {len(bitmaps)} media were "
                             f"given: put one marker where each goes")
        raw = text.encode()
        buf = ffi.new("char[]", raw)
        inp = ffi.new("mtmd_input_text *", {"text": buf, "text_len": len(raw), "add_special": add_special,
                                            "parse_special": parse_special})
        ptrs = ffi.new("mtmd_bitmap *[]", [b._ptr for b in bitmaps] or 1)
        chunks = InputChunks()
        _ffi.last_error_reset()
        rc = lib.mtmd_tokenize(self._ptr, chunks._ptr, inp, ptrs, len(bitmaps))
        if rc == 1:
            raise MediaError(f"libmtmd found a different number of media markers than the {len(bitmaps)} media given")
        if rc != 0:
            detail = f" ({_ffi.last_error})" if _ffi.last_error else ""
            raise MediaError(f"libmtmd could not preprocess the media{detail}")
        chunks._media = bitmaps  # the chunks refer to the bitmaps' ids; keep them with the chunks
        chunks._maker = weakref.ref(self._h)
        return chunks

    def _check_maker(self, chunks: InputChunks | InputChunk) -> None:
        """Media chunks are preprocessed for one projector: refuse those of another."""
        owner = chunks.chunks if isinstance(chunks, InputChunk) else chunks
        maker = owner._maker() if owner._maker is not None else None
        if maker is not self._h:
            raise ValueError("these chunks were tokenized by another MtmdContext: tokenize with this one")

    def encode(self, chunk: InputChunk) -> np.ndarray:
        """The embeddings of one media chunk: an (n_tokens, n_embd) float32 copy."""
        if chunk.type == ChunkType.TEXT:
            raise ValueError("text chunks have no media to encode")
        self._check_maker(chunk)
        with self._lock:
            rc = lib.mtmd_encode_chunk(self._ptr, chunk._ptr)
            if rc != 0:
                raise MediaError(f"libmtmd could not encode the {chunk.type.name.lower()} (code {rc})")
            n = chunk.n_tokens
            width = self._n_embd
            p = lib.mtmd_get_output_embd(self._ptr)
            return np.frombuffer(ffi.buffer(p, n * width * 4), dtype=np.float32).reshape(n, width).copy()

    # -- decoding ---------------------------------------------------------------------
    def eval(self, ctx: Context, chunks: InputChunks | InputChunk, n_past: int | None = None, seq_id: int = 0,
             n_batch: int | None = None, logits_last: bool = True) -> int:
        """Decode ``chunks`` (or one chunk) into ``ctx`` at position ``n_past`` (default: where
        sequence ``seq_id`` ends); returns the position after them.

        Raises PromptTooLongError, before decoding anything, when they do not fit.
        """
        if ctx._h.parents[0] is not self._h.parents[0]:  # the model handles (alive even if closed)
            raise ValueError("the context belongs to another model than the projector was loaded for")
        self._check_maker(chunks)
        if n_past is None:
            n_past = ctx.memory.seq_pos_max(seq_id) + 1
        n_tokens = chunks.n_tokens
        if n_past + n_tokens > ctx.n_ctx_seq:
            raise PromptTooLongError(f"the prompt needs {n_tokens} more tokens after position {n_past} but the "
                                     f"context holds {ctx.n_ctx_seq}: shorten it or raise n_ctx")
        new_n_past = ffi.new("llama_pos *")
        abort = ctx._abort
        abort.cancel = 0
        abort.aborted = 0
        _ffi.last_error_reset()
        with self._lock:
            if isinstance(chunks, InputChunk):
                rc = lib.mtmd_helper_eval_chunk_single(self._ptr, ctx._ptr, chunks._ptr, n_past, seq_id,
                                                       n_batch or ctx.n_batch, logits_last, new_n_past)
            else:
                rc = lib.mtmd_helper_eval_chunks(self._ptr, ctx._ptr, chunks._ptr, n_past, seq_id,
                                                 n_batch or ctx.n_batch, logits_last, new_n_past)
        if rc != 0:
            interrupt = _ffi.take_interrupt()
            ctx.memory.seq_rm(seq_id, n_past, -1)  # leave the sequence as it was
            if interrupt is not None:
                raise interrupt
            if abort.aborted:
                raise DecodeAbortedError("the decode was cancelled; the context is unchanged", rc)
            detail = f": {_ffi.last_error}" if _ffi.last_error else ""
            raise DecodeError(f"decoding the multimodal prompt failed (code {rc}){detail}", rc)
        ctx._n_outputs = 1 if logits_last else 0
        if _ffi.interrupt_pending():
            raise _ffi.take_interrupt()  # type: ignore[misc]
        return int(new_n_past[0])

    def __repr__(self) -> str:
        if self.closed:
            return "<MtmdContext closed>"
        kinds = [k for k, on in (("vision", self.supports_vision), ("audio", self.supports_audio)) if on]
        return f"<MtmdContext {self.path.name} ({'+'.join(kinds) or 'no input'})>"


__all__ = ["MtmdContext"]

"""Bitmap: one image (RGB pixels) or one audio clip (PCM samples) for libmtmd (``mtmd_bitmap``)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _ffi
from .._ffi import ffi, lib
from .._handle import CObject
from .errors import MediaError

if TYPE_CHECKING:
    from .context import MtmdContext

# What the helper decodes: stb_image for pictures, miniaudio for sound.
IMAGE_FORMATS = "JPEG, PNG, BMP, GIF, TGA, PSD, HDR, PIC, PNM"
AUDIO_FORMATS = "WAV, MP3, FLAC"


def _sniff(data: bytes) -> str | None:
    """A format name for error messages, from the first bytes."""
    signatures = {b"RIFF": "WAV or WebP", b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF",
                  b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"%PDF": "PDF", b"fLaC": "FLAC",
                  b"ID3": "MP3"}
    for magic, name in signatures.items():
        if data.startswith(magic):
            if name == "WAV or WebP":
                return "WebP" if data[8:12] == b"WEBP" else "WAV"
            return name
    if data[4:12] in (b"ftypavif", b"ftypheic", b"ftypmif1"):
        return "AVIF/HEIC"
    return None


_DECODABLE = {"PNG", "JPEG", "GIF", "BMP", "WAV", "MP3", "FLAC"}


def _decode_failure(data: bytes, audio_ok: bool) -> str:
    """Why the helper could not decode ``data``, in words a user can act on."""
    kind = _sniff(data)
    supported = f"supported: images {IMAGE_FORMATS}; audio {AUDIO_FORMATS}"
    if kind in ("WAV", "MP3", "FLAC") and not audio_ok:
        return f"{kind} audio was given, but the projector has no audio encoder"
    if kind in _DECODABLE:
        return f"could not decode the {kind} data: it is corrupt or truncated"
    if kind == "WebP":
        return f"WebP is decoded through ffmpeg, which was not found on PATH: convert to PNG or JPEG ({supported})"
    if kind is not None:
        return f"{kind} is not a supported media format ({supported})"
    return f"the data is not an image or audio format libmtmd can read ({supported})"


class Bitmap(CObject):
    """An image (``nx`` x ``ny`` RGB pixels) or an audio clip (mono float samples).

    Its ``id`` identifies the content (a SHA-256 hex digest): two bitmaps with the same id
    give the same tokens, which is what prefix reuse across chat turns relies on.
    """

    def __init__(self) -> None:
        raise TypeError("make a Bitmap with Bitmap.from_file/from_bytes/from_array/from_pil/from_audio")

    @classmethod
    def _from_c(cls, ptr: Any) -> Bitmap:
        self = cls.__new__(cls)
        self._own(ptr, lib.mtmd_bitmap_free)
        return self

    # -- constructors -----------------------------------------------------------------
    @classmethod
    def from_array(cls, pixels: Any) -> Bitmap:
        """An image from a numpy array: H x W x 3 (RGB) or x 4 (alpha dropped) or H x W (grey),
        uint8, or floats in [0, 1]."""
        arr = np.asarray(pixels)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise MediaError(f"an image array must be H x W x 3 (RGB), H x W x 4 or H x W; got shape {arr.shape}")
        arr = arr[:, :, :3]
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating):
                if not np.isfinite(arr).all():
                    raise MediaError("the image array holds NaN or infinite values")
                arr = np.clip(np.rint(arr * 255.0), 0, 255)
            elif not np.issubdtype(arr.dtype, np.integer):
                raise MediaError(f"an image array must hold integers or floats, not {arr.dtype}")
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        arr = np.ascontiguousarray(arr)
        ny, nx = arr.shape[:2]
        ptr = lib.mtmd_bitmap_init(nx, ny, ffi.from_buffer(arr))
        if ptr == ffi.NULL:
            raise MediaError(f"libmtmd could not make a {nx}x{ny} image")
        self = cls._from_c(ptr)
        self.id = hashlib.sha256(b"rgb:%d:%d:" % (nx, ny) + arr.tobytes()).hexdigest()
        return self

    @classmethod
    def from_pil(cls, image: Any) -> Bitmap:
        """An image from a PIL image (any mode; converted to RGB)."""
        if not hasattr(image, "convert"):
            raise MediaError(f"expected a PIL image, got {type(image).__name__}")
        return cls.from_array(np.asarray(image.convert("RGB")))

    @classmethod
    def from_audio(cls, samples: Any) -> Bitmap:
        """An audio clip from mono float samples at the projector's sample rate
        (:attr:`MtmdContext.audio_sample_rate`)."""
        arr = np.ascontiguousarray(np.asarray(samples, dtype=np.float32).reshape(-1))
        if arr.size == 0:
            raise MediaError("the audio clip is empty")
        ptr = lib.mtmd_bitmap_init_from_audio(arr.size, ffi.from_buffer("float[]", arr))
        if ptr == ffi.NULL:
            raise MediaError("libmtmd could not make an audio clip")
        self = cls._from_c(ptr)
        self.id = hashlib.sha256(b"pcm:" + arr.tobytes()).hexdigest()
        return self

    @classmethod
    def from_bytes(cls, mctx: MtmdContext, data: bytes | bytearray | memoryview) -> Bitmap:
        """An image or audio clip from the bytes of a file (format detected from the content)."""
        data = bytes(data)
        if not data:
            raise MediaError("the media is empty (0 bytes)")
        opt = lib.mtmd_helper_init_opt_default()
        _ffi.last_error_reset()
        res = lib.mtmd_helper_bitmap_init_from_buf(mctx._ptr, data, len(data), False, opt)
        if res.video_ctx != ffi.NULL:
            lib.mtmd_helper_video_free(res.video_ctx)
            if res.bitmap != ffi.NULL:
                lib.mtmd_bitmap_free(res.bitmap)
            raise MediaError("video input is not supported; give single frames as images")
        if res.bitmap == ffi.NULL:
            raise MediaError(_decode_failure(data, mctx.supports_audio))
        return cls._from_c(res.bitmap)

    @classmethod
    def from_file(cls, mctx: MtmdContext, path: str | os.PathLike) -> Bitmap:
        """An image or audio clip from a file."""
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"no such media file: {p}")
        try:
            return cls.from_bytes(mctx, p.read_bytes())
        except MediaError as e:
            raise MediaError(f"{p.name}: {e}") from None

    # -- properties -------------------------------------------------------------------
    nx = property(lambda self: int(lib.mtmd_bitmap_get_nx(self._ptr)), doc="width in pixels (audio: 0)")
    ny = property(lambda self: int(lib.mtmd_bitmap_get_ny(self._ptr)), doc="height in pixels (audio: 0)")
    n_bytes = property(lambda self: int(lib.mtmd_bitmap_get_n_bytes(self._ptr)))
    is_audio = property(lambda self: bool(lib.mtmd_bitmap_is_audio(self._ptr)))

    @property
    def id(self) -> str:
        p = lib.mtmd_bitmap_get_id(self._ptr)
        return ffi.string(p).decode() if p != ffi.NULL else ""

    @id.setter
    def id(self, value: str) -> None:
        lib.mtmd_bitmap_set_id(self._ptr, value.encode())

    def to_array(self) -> np.ndarray:
        """A copy of the content: H x W x 3 uint8 pixels, or float32 samples for audio."""
        buf = ffi.buffer(lib.mtmd_bitmap_get_data(self._ptr), self.n_bytes)
        if self.is_audio:
            return np.frombuffer(buf, dtype=np.float32).copy()
        return np.frombuffer(buf, dtype=np.uint8).reshape(self.ny, self.nx, 3).copy()

    def __repr__(self) -> str:
        if self.closed:
            return "<Bitmap closed>"
        if self.is_audio:
            return f"<Bitmap audio {self.n_bytes // 4} samples id={self.id[:12]}>"
        return f"<Bitmap {self.nx}x{self.ny} id={self.id[:12]}>"


__all__ = ["Bitmap", "IMAGE_FORMATS", "AUDIO_FORMATS"]
